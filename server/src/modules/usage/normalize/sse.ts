/**
 * A small, single-pass `text/event-stream` parser (WHATWG "server-sent events" rules):
 * LF, CRLF and CR line ends; `event:` and `data:` fields, one optional space after the colon;
 * multi-line `data:` joined with "\n"; comment lines (`:`) skipped; a leading BOM ignored.
 * `[DONE]` is ordinary data, left to the caller. A final event without its terminating blank
 * line (a stream cut off mid-event) is still returned, marked `complete: false`, because a
 * meter wants to see what arrived; the caller's JSON.parse decides whether it is whole.
 */
export interface SseEvent {
  /** The `event:` field, or "" for the spec's default type, "message" (no field, or `event: message`). */
  event: string;
  data: string;
  /** False only for a final event the stream ended inside of. */
  complete: boolean;
}

export function parseSse(text: string): SseEvent[] {
  const events: SseEvent[] = [];
  const length = text.length;
  let pos = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  // Most providers frame with LF only; then one indexOf per line is all the scanning needed.
  const crlf = text.indexOf('\r', pos) !== -1;
  let nextCr = crlf ? text.indexOf('\r', pos) : -1;
  let nextLf = text.indexOf('\n', pos);
  let event = '';
  let data: string | null = null;

  while (pos < length) {
    let end: number;
    let next: number;
    if (!crlf) {
      if (nextLf !== -1 && nextLf < pos) nextLf = text.indexOf('\n', pos);
      end = nextLf === -1 ? length : nextLf;
      next = end + 1;
    } else {
      if (nextCr !== -1 && nextCr < pos) nextCr = text.indexOf('\r', pos);
      if (nextLf !== -1 && nextLf < pos) nextLf = text.indexOf('\n', pos);
      if (nextCr === -1 && nextLf === -1) end = length;
      else if (nextCr === -1) end = nextLf;
      else if (nextLf === -1) end = nextCr;
      else end = nextCr < nextLf ? nextCr : nextLf;
      next = end + (end === nextCr && nextLf === end + 1 ? 2 : 1);
    }

    if (end === pos) {
      // Blank line: dispatch. An event with no data line is dropped, as the spec says.
      if (data !== null) events.push({ event, data, complete: true });
      event = '';
      data = null;
    } else if (text.charCodeAt(pos) !== 58 /* ':' comment */) {
      let colon = text.indexOf(':', pos);
      if (colon === -1 || colon > end) colon = end;
      const fieldLength = colon - pos;
      let valueStart = colon + 1;
      if (valueStart < end && text.charCodeAt(valueStart) === 32) valueStart++;
      if (fieldLength === 4 && text.startsWith('data', pos)) {
        const value = valueStart >= end ? '' : text.slice(valueStart, end);
        data = data === null ? value : `${data}\n${value}`;
      } else if (fieldLength === 5 && text.startsWith('event', pos)) {
        event = valueStart >= end ? '' : text.slice(valueStart, end);
        // "message" is the default type spelled out: the same event as one without the line.
        if (event === 'message') event = '';
      }
      // id:, retry: and unknown fields do not matter to metering.
    }
    pos = next;
  }
  if (data !== null) events.push({ event, data, complete: false });
  return events;
}
