import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseSse, type SseEvent } from './sse.ts';

const done = (event: string, data: string): SseEvent => ({ event, data, complete: true });

describe('parseSse', () => {
  it('parses LF-framed events with and without event lines', () => {
    const text = 'event: message_start\ndata: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n';
    expect(parseSse(text)).toEqual([done('message_start', '{"a":1}'), done('', '{"b":2}'), done('', '[DONE]')]);
  });

  it('treats CRLF and lone CR exactly like LF', () => {
    const lf = 'event: a\ndata: one\ndata: two\n\n: comment\ndata: three\n\n';
    expect(parseSse(lf.replace(/\n/g, '\r\n'))).toEqual(parseSse(lf));
    expect(parseSse(lf.replace(/\n/g, '\r'))).toEqual(parseSse(lf));
    expect(parseSse(lf)).toEqual([done('a', 'one\ntwo'), done('', 'three')]);
  });

  it('skips comment lines, including OpenRouter keep-alives between events', () => {
    const text = ': OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\ndata: {"x":1}\n\n:ping\n\n';
    expect(parseSse(text)).toEqual([done('', '{"x":1}')]);
  });

  it('joins multi-line data with newlines and keeps empty data lines', () => {
    expect(parseSse('data: first\ndata:\ndata: third\n\n')).toEqual([done('', 'first\n\nthird')]);
    expect(parseSse('data\n\n')).toEqual([done('', '')]);
  });

  it('removes exactly one space after the colon', () => {
    expect(parseSse('data:x\n\ndata:  y\n\nevent:e\ndata: z\n\n')).toEqual([done('', 'x'), done('', ' y'), done('e', 'z')]);
  });

  it('drops events that have no data, and ignores id, retry and unknown fields', () => {
    expect(parseSse('event: ping\n\nid: 7\nretry: 100\nfoo: bar\ndata: ok\n\n')).toEqual([done('', 'ok')]);
  });

  it('returns a truncated final event marked incomplete, whether or not its last line ended', () => {
    expect(parseSse('data: {"a":1}\n\ndata: {"b":')).toEqual([done('', '{"a":1}'), { event: '', data: '{"b":', complete: false }]);
    expect(parseSse('event: x\ndata: {"c":3}\n')).toEqual([{ event: 'x', data: '{"c":3}', complete: false }]);
    expect(parseSse('data: a\r\n\r\ndata: b\r')).toEqual([done('', 'a'), { event: '', data: 'b', complete: false }]);
  });

  it('ignores a leading byte-order mark, blank input and stray blank lines', () => {
    expect(parseSse('\uFEFFdata: a\n\n')).toEqual([done('', 'a')]);
    expect(parseSse('')).toEqual([]);
    expect(parseSse('\n\n\r\n\n')).toEqual([]);
  });

  it('keeps colons inside data values', () => {
    expect(parseSse('data: {"url":"https://x"}\n\n')).toEqual([done('', '{"url":"https://x"}')]);
  });

  // Any sequence of events, serialised with any line ending and interleaved comments, parses back.
  const line = fc.string({ unit: fc.constantFrom('a', 'b', ' ', ':', '{', '}', '"', 'é', '\u2014', '0') });
  const arbitraryEvent = fc.record({
    event: fc.oneof(fc.constant(''), fc.stringMatching(/^[a-z_.]{1,12}$/)),
    lines: fc.array(line, { minLength: 1, maxLength: 4 }),
    comment: fc.boolean(),
  });

  it('round-trips arbitrary events under LF, CRLF and CR framing', () => {
    fc.assert(
      fc.property(fc.array(arbitraryEvent, { maxLength: 8 }), fc.constantFrom('\n', '\r\n', '\r'), (events, eol) => {
        let text = '';
        for (const e of events) {
          if (e.comment) text += `: keep-alive${eol}`;
          if (e.event) text += `event: ${e.event}${eol}`;
          for (const l of e.lines) text += `data: ${l}${eol}`;
          text += eol;
        }
        expect(parseSse(text)).toEqual(events.map((e) => done(e.event, e.lines.join('\n'))));
      }),
    );
  });

  it('never throws and marks at most the last event incomplete, for any cut of a stream', () => {
    const stream = 'event: a\r\ndata: {"x":1}\r\n\r\n: c\r\ndata: {"y":\r\ndata: 2}\r\n\r\n';
    fc.assert(
      fc.property(fc.integer({ min: 0, max: stream.length }), (cut) => {
        const events = parseSse(stream.slice(0, cut));
        events.slice(0, -1).forEach((e) => expect(e.complete).toBe(true));
        expect(events.length).toBeLessThanOrEqual(2);
      }),
    );
  });
});
