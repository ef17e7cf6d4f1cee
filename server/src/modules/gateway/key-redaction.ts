/**
 * The provider key the gateway injects is the merchant's secret; the caller is often an end user
 * holding a session token. A provider (or a merchant's self-hosted endpoint) that quotes the
 * request's key in an error ("Incorrect API key provided: sk-…") or echoes the request would hand
 * it to that user, so answers are relayed with the key masked, in their headers and their body.
 */

/** Shorter keys are not masked: a body would be mangled wherever their few characters occur. */
export const MIN_REDACTED_KEY_LENGTH = 8;

/** What stands in for the key: as long as it (the body's Content-Length stays true), with its last four characters, as providers mask keys. */
export function maskOf(key: Buffer): Buffer {
  const mask = Buffer.alloc(key.length, '*');
  const ascii = key.every((byte) => byte < 0x80);
  if (ascii && key.length > 4) key.copy(mask, key.length - 4, key.length - 4);
  return mask;
}

/** The response headers with the key masked wherever it appears in a value. */
export function redactedHeaders<T extends Record<string, string | string[] | number | undefined>>(headers: T, key: string): T {
  if (key.length < MIN_REDACTED_KEY_LENGTH) return headers;
  const mask = maskOf(Buffer.from(key)).toString();
  const redact = (value: string) => value.split(key).join(mask);
  const out: Record<string, string | string[] | number | undefined> = {};
  for (const [name, value] of Object.entries(headers)) {
    out[name] = typeof value === 'string' ? redact(value) : Array.isArray(value) ? value.map(redact) : value;
  }
  return out as T;
}

/** `text` with the key masked wherever it occurs, as a body relayed through KeyRedactor reads. */
export function redactedText(text: string, key: string): string {
  if (!KeyRedactor.applies(key) || !text.includes(key)) return text;
  const redactor = new KeyRedactor(key);
  return Buffer.concat([redactor.push(Buffer.from(text)), redactor.end()]).toString('utf8');
}

/**
 * Masks the key in a body relayed chunk by chunk. A key split across two chunks is caught: the
 * longest end of what was seen that could begin the key is held back until the next chunk (or
 * the end) tells. Anything else passes at once, so a stream is not delayed by it.
 */
export class KeyRedactor {
  private readonly key: Buffer;
  private readonly mask: Buffer;
  private held: Buffer = Buffer.alloc(0);

  constructor(key: string) {
    this.key = Buffer.from(key);
    this.mask = maskOf(this.key);
  }

  /** Whether `key` is long enough to be masked (see MIN_REDACTED_KEY_LENGTH). */
  static applies(key: string | null | undefined): key is string {
    return typeof key === 'string' && key.length >= MIN_REDACTED_KEY_LENGTH;
  }

  /** The bytes that may go now. */
  push(chunk: Buffer): Buffer {
    const text = this.held.length > 0 ? Buffer.concat([this.held, chunk]) : chunk;
    const masked = this.masked(text);
    const hold = this.partialKeyAtEnd(masked);
    this.held = hold > 0 ? Buffer.from(masked.subarray(masked.length - hold)) : Buffer.alloc(0);
    return hold > 0 ? masked.subarray(0, masked.length - hold) : masked;
  }

  /**
   * What was held back, once the body ends or is cut: a start of the key that never finished. A
   * long one is most of the key, so it goes masked; a short one (a chunk that ended in "s" before
   * "sk-…") is as likely plain text, and gives away no more than the key's public prefix.
   */
  end(): Buffer {
    const rest = this.held;
    this.held = Buffer.alloc(0);
    return rest.length >= MIN_REDACTED_KEY_LENGTH ? Buffer.alloc(rest.length, '*') : rest;
  }

  private masked(text: Buffer): Buffer {
    let at = text.indexOf(this.key);
    if (at < 0) return text;
    const out = Buffer.from(text);
    // Every occurrence, overlapping ones too: a key that repeats its own start (a period) could
    // otherwise show whole across the end of one mask and the text after it.
    while (at >= 0) {
      this.mask.copy(out, at);
      at = text.indexOf(this.key, at + 1);
    }
    return out;
  }

  /** The length of the longest end of `text` that is a proper start of the key (0 when none). */
  private partialKeyAtEnd(text: Buffer): number {
    const first = this.key[0]!;
    const from = Math.max(0, text.length - this.key.length + 1);
    for (let at = text.indexOf(first, from); at >= 0; at = text.indexOf(first, at + 1)) {
      const length = text.length - at;
      if (text.compare(this.key, 0, length, at) === 0) return length;
    }
    return 0;
  }
}
