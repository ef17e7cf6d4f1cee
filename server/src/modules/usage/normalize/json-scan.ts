/**
 * Finds the JSON objects embedded in text that is not itself JSON: newline-delimited JSON,
 * a JSON array cut off mid-way (Gemini without `alt=sse`), or AWS event-stream frames read as
 * text (binary preludes and headers around each JSON payload). Single pass; a candidate that
 * fails to parse is skipped from its opening brace.
 */
import { isObj, type Obj, parseJson, valueAt } from './util.ts';

export function scanJsonObjects(text: string, from = 0): Obj[] {
  const out: Obj[] = [];
  const length = text.length;
  let i = text.indexOf('{', from);
  while (i !== -1 && i < length) {
    const end = objectEnd(text, i);
    if (end === -1) {
      // Unclosed: a stray brace byte in a binary frame before real payloads (control bytes follow
      // it, which JSON text never holds), or a truncated tail, whose inner objects (tool arguments,
      // even text inside its strings) are not records of their own.
      if (!hasControlByte(text, i)) break;
      i = text.indexOf('{', i + 1);
      continue;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text.slice(i, end + 1));
    } catch {
      parsed = undefined;
    }
    if (isObj(parsed)) {
      out.push(parsed);
      i = text.indexOf('{', end + 1);
    } else {
      i = text.indexOf('{', i + 1);
    }
  }
  return out;
}

/** Whether the text from `from` on holds a control character other than JSON's whitespace. */
function hasControlByte(text: string, from: number): boolean {
  for (let i = from; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 32 && c !== 9 && c !== 10 && c !== 13) return true;
  }
  return false;
}

/** Index of the brace closing the object opened at `start`, honouring strings; -1 if none. */
export function objectEnd(text: string, start: number): number {
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 /* { */) depth++;
    else if (c === 125 /* } */) {
      depth--;
      if (depth === 0) return i;
    }
  }
  return -1;
}

// Reading a few fields of a large body without parsing all of it: image responses carry
// megabytes of base64 and embeddings thousands of floats, next to a usage block of a few
// hundred bytes. Quoted-key search is safe because quotes inside JSON strings are escaped.

/** The object value of the last `"key": {…}` in the text, parsed on its own. */
export function lastObjectValue(text: string, key: string): Obj | undefined {
  const needle = `"${key}"`;
  let at = text.lastIndexOf(needle);
  while (at !== -1) {
    const value = valueAt(text, key, at);
    if (value !== -1 && value <= at + needle.length + 8 && text.charCodeAt(value) === 123) {
      const end = objectEnd(text, value);
      const parsed = end === -1 ? undefined : parseJson(text.slice(value, end + 1));
      return isObj(parsed) ? parsed : undefined;
    }
    at = at === 0 ? -1 : text.lastIndexOf(needle, at - 1);
  }
  return undefined;
}

/** How many times `"key":` occurs as a key. */
export function countKeys(text: string, key: string): number {
  let count = 0;
  let at = valueAt(text, key);
  while (at !== -1) {
    count++;
    at = valueAt(text, key, at);
  }
  return count;
}

/** How many times `"key":` occurs as a key with a string value (`"key": null` is not counted). */
export function countStringValues(text: string, key: string): number {
  let count = 0;
  let at = valueAt(text, key);
  while (at !== -1) {
    if (text.charCodeAt(at) === 34 /* " */) count++;
    at = valueAt(text, key, at);
  }
  return count;
}

/** The string value of the last `"key": "…"` in the text (a plain one: no escapes needed). */
export function lastStringValue(text: string, key: string): string | null {
  const needle = `"${key}"`;
  let at = text.lastIndexOf(needle);
  while (at !== -1) {
    const value = valueAt(text, key, at);
    if (value !== -1 && value <= at + needle.length + 8 && text.charCodeAt(value) === 34) {
      const end = text.indexOf('"', value + 1);
      const raw = end === -1 ? '' : text.slice(value + 1, end);
      return raw.includes('\\') ? null : raw;
    }
    at = at === 0 ? -1 : text.lastIndexOf(needle, at - 1);
  }
  return null;
}
