import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { acceptsStreamUsage, boundaryOf, MAX_FORM_FIELD_BYTES, MAX_REQUEST_TEXT, meteredRequestBody, multipartFields, withStreamUsage } from './request-body.ts';

/** A form as fetch sends it (undici's encoder): its content type and bytes. */
async function encoded(entries: [string, string | { bytes: Buffer; name: string; type: string }][]): Promise<{ contentType: string; body: Buffer }> {
  const form = new FormData();
  for (const [name, value] of entries) {
    if (typeof value === 'string') form.append(name, value);
    else form.append(name, new Blob([new Uint8Array(value.bytes)], { type: value.type }), value.name);
  }
  const response = new Response(form);
  return { contentType: response.headers.get('content-type')!, body: Buffer.from(await response.arrayBuffer()) };
}

/** A form written by hand: each part's header lines and content, joined by `eol`. */
function handmade(boundary: string, parts: { headers: string[]; content: string | Buffer }[], eol = '\r\n', preamble = ''): Buffer {
  const pieces: Buffer[] = [Buffer.from(preamble)];
  for (const part of parts) {
    pieces.push(Buffer.from(`--${boundary}${eol}${part.headers.map((line) => `${line}${eol}`).join('')}${eol}`), Buffer.from(part.content), Buffer.from(eol));
  }
  pieces.push(Buffer.from(`--${boundary}--${eol}`));
  return Buffer.concat(pieces);
}

const field = (name: string, content: string, extra: string[] = []) => ({ headers: [`Content-Disposition: form-data; name="${name}"`, ...extra], content });

describe('boundaryOf', () => {
  it('reads the boundary parameter, quoted or not, whatever its case and place', () => {
    expect(boundaryOf('multipart/form-data; boundary=----formdata-undici-0123')).toBe('----formdata-undici-0123');
    expect(boundaryOf('multipart/form-data;boundary=abc')).toBe('abc');
    expect(boundaryOf('Multipart/Form-Data; charset=utf-8; BOUNDARY="a b;c=d"')).toBe('a b;c=d');
    expect(boundaryOf('multipart/form-data; boundary="with \\"escaped\\" quotes"')).toBe('with "escaped" quotes');
    expect(boundaryOf('multipart/form-data; foo="x; boundary=fake"; boundary=real')).toBe('real');
  });

  it('is null when there is none, or none that is valid', () => {
    expect(boundaryOf('multipart/form-data')).toBeNull();
    expect(boundaryOf('multipart/form-data; charset=utf-8')).toBeNull();
    expect(boundaryOf('multipart/form-data; boundary=')).toBeNull();
    expect(boundaryOf('multipart/form-data; boundary="')).toBeNull();
    expect(boundaryOf('multipart/form-data; boundary=""')).toBeNull();
    expect(boundaryOf(`multipart/form-data; boundary=${'x'.repeat(71)}`)).toBeNull();
    expect(boundaryOf('')).toBeNull();
  });
});

describe('multipartFields', () => {
  const audio = { bytes: randomBytes(64 * 1024), name: 'call.mp3', type: 'audio/mpeg' };

  it('reads the text fields of a form fetch sends, and skips its file', async () => {
    const { contentType, body } = await encoded([
      ['model', 'whisper-1'],
      ['file', audio],
      ['response_format', 'verbose_json'],
      ['size', '512x512'],
      ['quality', 'high'],
      ['n', '2'],
      ['prompt', 'Multi-line\r\nprompt, "quoted", naïve'],
    ]);
    expect(multipartFields(contentType, body)).toEqual({
      model: 'whisper-1',
      response_format: 'verbose_json',
      size: '512x512',
      quality: 'high',
      n: '2',
      prompt: 'Multi-line\r\nprompt, "quoted", naïve',
    });
  });

  it('reads fields after a file of any size (over 1 MB here)', async () => {
    const { contentType, body } = await encoded([['file', { ...audio, bytes: randomBytes(MAX_REQUEST_TEXT + 512 * 1024) }], ['model', 'whisper-1']]);
    expect(body.length).toBeGreaterThan(MAX_REQUEST_TEXT);
    expect(multipartFields(contentType, body)).toEqual({ model: 'whisper-1' });
  });

  it('reads a quoted boundary, a preamble and an epilogue, bare LF lines and padding after a boundary', () => {
    const boundary = 'a b:c';
    const crlf = Buffer.concat([handmade(boundary, [field('model', 'dall-e-2'), field('size', '256x256')], '\r\n', 'This is the preamble.\r\n'), Buffer.from('epilogue')]);
    expect(multipartFields(`multipart/form-data; boundary="${boundary}"`, crlf)).toEqual({ model: 'dall-e-2', size: '256x256' });
    const lf = handmade('xyz', [field('model', 'whisper-1'), field('response_format', 'json')], '\n');
    expect(multipartFields('multipart/form-data; boundary=xyz', lf)).toEqual({ model: 'whisper-1', response_format: 'json' });
    const padded = Buffer.from('--xyz  \t\r\nContent-Disposition: form-data; name=model\r\n\r\nwhisper-1\r\n--xyz--');
    expect(multipartFields('multipart/form-data; boundary=xyz', padded)).toEqual({ model: 'whisper-1' });
  });

  it('skips files (a filename, even empty or filename*), parts of a type other than text, and fields over the size limit', () => {
    const body = handmade('b', [
      { headers: ['Content-Disposition: form-data; name="image"; filename="mask.txt"', 'Content-Type: text/plain'], content: 'model' },
      { headers: ["Content-Disposition: form-data; name=\"image2\"; filename*=UTF-8''m%C3%A4sk.png"], content: 'png' },
      { headers: ['Content-Disposition: form-data; name="blank"; filename=""'], content: 'x' },
      field('raw', 'bytes', ['Content-Type: application/octet-stream']),
      field('typed', 'text', ['Content-Type: text/plain; charset=utf-8']),
      field('long', 'x'.repeat(MAX_FORM_FIELD_BYTES + 1)),
      field('limit', 'y'.repeat(MAX_FORM_FIELD_BYTES)),
      { headers: ['Content-Disposition: attachment; name="other"'], content: 'no' },
      { headers: [], content: 'nameless' },
      field('model', 'gpt-image-1.5'),
    ]);
    expect(multipartFields('multipart/form-data; boundary=b', body)).toEqual({ typed: 'text', limit: 'y'.repeat(MAX_FORM_FIELD_BYTES), model: 'gpt-image-1.5' });
  });

  it('keeps the first value of a field sent twice, skips values with control characters, and reads names and values as UTF-8', () => {
    const body = handmade('b', [field('model', 'whisper-1'), field('model', 'gpt-4o-transcribe'), field('nul', 'a\u0000b'), field('modèle', 'ça'), field('empty', '')]);
    expect(multipartFields('multipart/form-data; boundary=b', body)).toEqual({ model: 'whisper-1', modèle: 'ça', empty: '' });
  });

  it('gives what it read before a form stops making sense, and never throws', async () => {
    const { contentType, body } = await encoded([['model', 'whisper-1'], ['response_format', 'json'], ['file', audio]]);
    // Cut inside the file: both fields were read.
    expect(multipartFields(contentType, body.subarray(0, body.length - 1000))).toEqual({ model: 'whisper-1', response_format: 'json' });
    // Cut anywhere in its head: no throw, and never a field that was not sent.
    for (let end = 0; end < body.indexOf('audio/mpeg') + 20; end++) {
      const fields = multipartFields(contentType, body.subarray(0, end));
      for (const [name, value] of Object.entries(fields)) expect({ model: 'whisper-1', response_format: 'json' }).toHaveProperty(name, value);
    }
    expect(multipartFields('multipart/form-data; boundary=nowhere', body)).toEqual({});
    expect(multipartFields('multipart/form-data', body)).toEqual({});
    expect(multipartFields(contentType, Buffer.alloc(0))).toEqual({});
    // Headers that never end within the limit.
    expect(multipartFields('multipart/form-data; boundary=b', Buffer.from(`--b\r\nContent-Disposition: form-data; name="model"\r\nX: ${'x'.repeat(10_000)}\r\n\r\nm\r\n--b--`))).toEqual({});
    for (let i = 0; i < 200; i++) expect(() => multipartFields('multipart/form-data; boundary=b', Buffer.concat([Buffer.from('--b\r\n'), randomBytes(512)]))).not.toThrow();
  });
});

describe('meteredRequestBody', () => {
  it('passes JSON and text up to 1 MB as they came, and a form as a JSON object of its text fields', async () => {
    expect(meteredRequestBody('application/json', Buffer.from('{"model":"gpt-5.4-mini"}'))).toBe('{"model":"gpt-5.4-mini"}');
    expect(meteredRequestBody('application/json', Buffer.alloc(MAX_REQUEST_TEXT + 1, 0x20))).toBeUndefined();
    expect(meteredRequestBody('application/octet-stream', Buffer.from('{"model":"x"}'))).toBeUndefined();
    expect(meteredRequestBody('application/json', Buffer.alloc(0))).toBeUndefined();
    const { contentType, body } = await encoded([['model', 'whisper-1'], ['file', { bytes: randomBytes(MAX_REQUEST_TEXT + 1), name: 'a.wav', type: 'audio/wav' }]]);
    expect(JSON.parse(meteredRequestBody(contentType, body)!)).toEqual({ model: 'whisper-1' });
    expect(meteredRequestBody('multipart/form-data; boundary=nowhere', body)).toBeUndefined();
  });
});

describe('acceptsStreamUsage', () => {
  const url = (href: string) => new URL(href);

  it('is true for the chat and completions APIs of providers that document stream_options.include_usage', () => {
    expect(acceptsStreamUsage('openai', 'chat.completions', url('https://api.openai.com/v1/chat/completions'))).toBe(true);
    expect(acceptsStreamUsage('openai', 'completions', url('https://api.openai.com/v1/completions'))).toBe(true);
    expect(acceptsStreamUsage('deepseek', 'chat.completions', url('https://api.deepseek.com/chat/completions'))).toBe(true);
    expect(acceptsStreamUsage('anthropic', 'chat.completions', url('https://api.anthropic.com/v1/chat/completions'))).toBe(true);
    expect(acceptsStreamUsage('anthropic', 'messages', url('https://api.anthropic.com/v1/messages'))).toBe(false);
    expect(acceptsStreamUsage('openai', 'responses', url('https://api.openai.com/v1/responses'))).toBe(false);
    expect(acceptsStreamUsage('openai', 'embeddings', url('https://api.openai.com/v1/embeddings'))).toBe(false);
  });

  it('is false where the option is refused or its support unknown: Mistral, a merchant’s own server, OpenRouter', () => {
    expect(acceptsStreamUsage('mistral', 'chat.completions', url('https://api.mistral.ai/v1/chat/completions'))).toBe(false);
    expect(acceptsStreamUsage('openai-compatible', 'chat.completions', url('http://10.0.0.5:8000/v1/chat/completions'))).toBe(false);
    expect(acceptsStreamUsage('openrouter', 'chat.completions', url('https://openrouter.ai/api/v1/chat/completions'))).toBe(false);
  });

  it('on Azure OpenAI, only from api-version 2024-09-01 on, and on the v1 API', () => {
    const azure = (query: string) => acceptsStreamUsage('azure-openai', 'chat.completions', url(`https://x.openai.azure.com/openai/deployments/gpt/chat/completions${query}`));
    expect(azure('?api-version=2024-02-15-preview')).toBe(false);
    expect(azure('?api-version=2024-06-01')).toBe(false);
    expect(azure('?api-version=2024-09-01-preview')).toBe(true);
    expect(azure('?api-version=2024-10-21')).toBe(true);
    expect(acceptsStreamUsage('azure-openai', 'chat.completions', url('https://x.openai.azure.com/openai/v1/chat/completions'))).toBe(true);
    expect(acceptsStreamUsage('azure-openai', 'chat.completions', url('https://x.openai.azure.com/openai/v1/chat/completions?api-version=preview'))).toBe(true);
  });
});

describe('withStreamUsage', () => {
  const openai = (body: string) => withStreamUsage('openai', 'chat.completions', new URL('https://api.openai.com/v1/chat/completions'), Buffer.from(body))?.toString('utf8') ?? null;

  it('adds stream_options.include_usage to a stream that lacks it, every other byte as it was', () => {
    const raw = '{ "model" : "gpt-5.4-mini",\n  "seed": 12345678901234567890, "messages": [{"role": "user", "content": "h\\u00e9llo é {\\"stream_options\\": 1}"}], "stream": true }';
    expect(openai(raw)).toBe(`{"stream_options":{"include_usage":true},${raw.slice(1)}`);
    expect(openai('\n {"stream":true}')).toBe('\n {"stream_options":{"include_usage":true},"stream":true}');
  });

  it('overrides include_usage: false and fills a null stream_options, keeping the caller’s other options', () => {
    expect(openai('{"stream":true,"stream_options":{"include_usage":false,"include_obfuscation":false},"n":2}')).toBe(
      '{"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false},"n":2}',
    );
    expect(openai('{"stream_options": null , "stream":true}')).toBe('{"stream_options": {"include_usage":true} , "stream":true}');
    expect(openai('{"stream":true,"stream_options":{"continuous_usage_stats":true}}')).toBe('{"stream":true,"stream_options":{"continuous_usage_stats":true,"include_usage":true}}');
    // A repeated key: parsers differ on which one counts, so each is set.
    expect(openai('{"stream_options":{},"stream":true,"stream_options":{"include_usage":false}}')).toBe(
      '{"stream_options":{"include_usage":true},"stream":true,"stream_options":{"include_usage":true}}',
    );
  });

  it('leaves alone a request that asks for usage already, does not stream, or is not a JSON object', () => {
    expect(openai('{"stream":true,"stream_options":{"include_usage":true}}')).toBeNull();
    expect(openai('{"stream":false}')).toBeNull();
    expect(openai('{"model":"m"}')).toBeNull();
    // What a lax server reads as false, or refuses: "true" and 1 are streams (gateway.leniency.test.ts).
    expect(openai('{"stream":"false"}')).toBeNull();
    expect(openai('{"stream":0}')).toBeNull();
    expect(openai('{"stream":"maybe"}')).toBeNull();
    expect(openai('{"messages":[{"role":"user","content":"x"}],"metadata":{"stream":true}}')).toBeNull();
    expect(openai('[{"stream":true}]')).toBeNull();
    expect(openai('{"stream":true,')).toBeNull();
    expect(openai('\ufeff{"stream":true}')).toBeNull();
    // A stream_options the provider refuses as it is: not the gateway's to fix.
    expect(openai('{"stream":true,"stream_options":"yes"}')).toBeNull();
    expect(openai('{"stream":true,"stream_options":[true]}')).toBeNull();
  });

  it('leaves alone a provider or API that is not known to accept it', () => {
    const body = Buffer.from('{"stream":true}');
    expect(withStreamUsage('mistral', 'chat.completions', new URL('https://api.mistral.ai/v1/chat/completions'), body)).toBeNull();
    expect(withStreamUsage('openai', 'responses', new URL('https://api.openai.com/v1/responses'), body)).toBeNull();
    expect(withStreamUsage('openai-compatible', 'chat.completions', new URL('http://ollama.internal:11434/v1/chat/completions'), body)).toBeNull();
  });

  it('gives a body that parses to the request asked, plus include_usage', () => {
    const request = { model: 'gpt-5.4-mini', messages: [{ role: 'user', content: 'a "quoted" {brace} [bracket] \\ backslash' }], tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }], stream: true, temperature: 0.2 };
    expect(JSON.parse(openai(JSON.stringify(request, null, 2))!)).toEqual({ stream_options: { include_usage: true }, ...request });
  });
});

describe('a request body nested deeper than JSON.stringify can write (JSON.parse reads any depth)', () => {
  const nested = (depth: number, leaf: string) => `${'{"a":'.repeat(depth)}${leaf}${'}'.repeat(depth)}`;

  it('never throws: its stream_options are left as they came, and a body with NaN is handed to metering as it came', () => {
    const streamed = `{"stream":true,"stream_options":${nested(20_000, '1')}}`;
    expect(withStreamUsage('openai', 'chat.completions', new URL('https://api.openai.com/v1/chat/completions'), Buffer.from(streamed))).toBeNull();
    const lenient = `{"model":"tts-1","input":"hi","speed":NaN,"extra":${nested(20_000, 'NaN')}}`;
    expect(meteredRequestBody('application/json', Buffer.from(lenient))).toBe(lenient);
  });
});
