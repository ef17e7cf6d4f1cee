/** Helpers shared by the stream normalizers of every provider family. */
import type { SseEvent } from './sse.ts';
import { errorCode, hasNonNullValue, obj, parseJson, str, valueAt } from './util.ts';

/** The event's type: its `event:` line, else the first `"type"` string in its data. */
export function eventType(event: SseEvent): string {
  if (event.event !== '') return event.event;
  const at = valueAt(event.data, 'type');
  if (at === -1 || event.data.charCodeAt(at) !== 34) return '';
  const end = event.data.indexOf('"', at + 1);
  return end === -1 ? '' : event.data.slice(at + 1, end);
}

/** Unnamed events looked at for an error: an error ends a stream, so it is among the last. */
const TRAILING_EVENTS = 3;

/**
 * The code of an in-stream error, or null. Named streams (Anthropic, Responses) announce it
 * as `event: error`; data-only streams (OpenAI chat, OpenRouter, Gemini) send a chunk with a
 * top-level `error` object (older vLLM: the error's own fields, `"object": "error"`) as their
 * last words, so only the trailing chunks are inspected.
 */
export function streamError(events: SseEvent[]): string | null {
  let unnamed = 0;
  for (let i = events.length - 1; i >= 0; i--) {
    const event = events[i]!;
    if (event.event !== '') {
      if (event.event === 'error') return errorCode(parseJson(event.data)) ?? 'error';
    } else if (unnamed < TRAILING_EVENTS && event.data !== '[DONE]') {
      unnamed++;
      if (hasNonNullValue(event.data, 'error') || saysError(event.data, 'type') || saysError(event.data, 'object')) {
        const code = errorCode(parseJson(event.data));
        if (code) return code;
      }
    }
  }
  return null;
}

/** Whether the first `"key":` in the data has the value "error". */
function saysError(data: string, key: string): boolean {
  const at = valueAt(data, key);
  return at !== -1 && data.startsWith('"error"', at);
}

/** Body framed as an event stream (as opposed to JSON, or plain-text formats like srt/vtt). */
export function isSseBody(text: string): boolean {
  let i = 0;
  while (i < text.length && (text.charCodeAt(i) <= 32 || text.charCodeAt(i) === 0xfeff)) i++;
  // Any field the stream may open with: a server may start by setting the client's reconnection time (`retry:`).
  return text.startsWith('data:', i) || text.startsWith('event:', i) || text.startsWith(':', i) || text.startsWith('id:', i) || text.startsWith('retry:', i);
}

/** A top-level string field from the first event that has it (the model, typically). */
export function firstField(events: SseEvent[], key: string): string | null {
  for (const event of events) {
    if (valueAt(event.data, key) === -1) continue;
    const value = str(obj(parseJson(event.data))?.[key]);
    if (value) return value;
  }
  return null;
}
