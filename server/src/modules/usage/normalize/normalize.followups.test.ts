/**
 * Follow-ups of the last review: an OpenRouter cost sent as a string, complete bodies without a
 * usage block estimated from all the output they carry (not only the visible text; Bedrock's too), and Azure
 * OpenAI in Azure Government.
 */
import { describe, expect, it } from 'vitest';
import type { ProviderResponse } from '../usage.types.ts';
import { detectProvider, normalizeResponse } from './index.ts';
import { takeMalformedCounts } from './util.ts';

function call(url: string, body: unknown, extra: Partial<ProviderResponse> = {}) {
  return normalizeResponse({ url, status: 200, headers: {}, body: typeof body === 'string' ? body : JSON.stringify(body), ...extra });
}

/** Normalizes, and says how many counts (or amounts) it read as malformed. */
function read(url: string, body: unknown, extra: Partial<ProviderResponse> = {}) {
  takeMalformedCounts();
  const usage = call(url, body, extra);
  return { usage, malformed: takeMalformedCounts() };
}

describe('a cost reported as text is read as a count as text is: exactly, or refused as malformed', () => {
  const chat = 'https://openrouter.ai/api/v1/chat/completions';
  const completion = (usage: object) => ({
    id: 'gen-1',
    model: 'anthropic/claude-sonnet-4.6',
    choices: [{ index: 0, message: { role: 'assistant', content: 'Hi' }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 1200, completion_tokens: 80, total_tokens: 1280, ...usage },
  });

  it('a plain decimal string is the reported cost, digit for digit', () => {
    const { usage, malformed } = read(chat, completion({ cost: '0.0047625000000000001', is_byok: false }));
    expect(usage).toMatchObject({ billable: true, inputTokens: 1200, outputTokens: 80, providerReportedCostUsd: '0.0047625000000000001' });
    expect(malformed).toBe(0);
  });

  it('a string in exponent notation (a float re-serialized as text) is expanded by its digits, as a JSON number is', () => {
    expect(read(chat, completion({ cost: '2.5e-7' }))).toMatchObject({ usage: { providerReportedCostUsd: '0.00000025' }, malformed: 0 });
    // The same figure as a JSON number reads the same.
    expect(call(chat, completion({ cost: 2.5e-7 })).providerReportedCostUsd).toBe('0.00000025');
  });

  it('BYOK: the upstream cost as text is read beside it (else a BYOK call would be charged only the fee)', () => {
    const { usage, malformed } = read(chat, completion({ cost: '0.0001', is_byok: true, cost_details: { upstream_inference_cost: '0.00019' } }));
    expect(usage).toMatchObject({ providerReportedCostUsd: '0.0001', details: { is_byok: 'true', upstream_inference_cost_usd: '0.00019' } });
    expect(malformed).toBe(0);
  });

  it('on a stream, the usage chunk is read the same way', () => {
    const chunk = { id: 'gen-2', model: 'openai/gpt-5', choices: [{ index: 0, delta: { content: 'Hi' }, finish_reason: 'stop' }] };
    const usageChunk = { id: 'gen-2', model: 'openai/gpt-5', choices: [], usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7, cost: '0.0000165' } };
    const body = `data: ${JSON.stringify(chunk)}\n\ndata: ${JSON.stringify(usageChunk)}\n\ndata: [DONE]\n\n`;
    expect(read(chat, body)).toMatchObject({ usage: { billable: true, providerReportedCostUsd: '0.0000165' }, malformed: 0 });
  });

  it.each(['abc', '-1', '1e400', '', ' 0.5', '0x10', '1.', '.5', 'NaN', 'Infinity'])(
    'cost %j is no amount: ignored here and counted as malformed, so post-request metering refuses the response',
    (cost) => {
      const { usage, malformed } = read(chat, completion({ cost }));
      expect(usage.providerReportedCostUsd).toBeNull();
      expect(malformed).toBeGreaterThan(0);
    },
  );

  it('a cost of another type is left aside, as before', () => {
    expect(read(chat, completion({ cost: true }))).toMatchObject({ usage: { providerReportedCostUsd: null }, malformed: 0 });
  });

  it("Perplexity's cost object: its total_cost as text is read the same way", () => {
    const perplexity = read('https://api.perplexity.ai/chat/completions', { ...completion({ cost: { total_cost: '0.351638' } }), model: 'sonar-pro' });
    expect(perplexity).toMatchObject({ usage: { providerReportedCostUsd: '0.351638' }, malformed: 0 });
  });
});

describe('a complete body without usage is estimated from all the output it carries, as a cut stream is', () => {
  it('OpenAI chat: tool-call arguments, the legacy function_call, refusal and reasoning text are counted beside the visible text', () => {
    const args = '{"city":"Paris","unit":"celsius"}';
    const body = {
      id: 'c',
      model: 'deepseek-reasoner',
      choices: [
        { index: 0, message: { role: 'assistant', content: 'Checking.', reasoning_content: 'The user wants weather.', tool_calls: [{ id: 't', type: 'function', function: { name: 'weather', arguments: args } }] }, finish_reason: 'tool_calls' },
        { index: 1, message: { role: 'assistant', content: null, refusal: 'I cannot help with that.' }, finish_reason: 'stop' },
        { index: 2, message: { role: 'assistant', content: null, function_call: { name: 'weather', arguments: '{"city":"Rome"}' } }, finish_reason: 'function_call' },
      ],
    };
    const u = call('https://api.deepseek.com/chat/completions', body);
    expect(u).toMatchObject({ billable: false, incomplete: true, streamedText: 'Checking.', details: { reason: 'no_usage' } });
    expect(u.details.streamed_other_chars).toBe('The user wants weather.'.length + args.length + 'I cannot help with that.'.length + '{"city":"Rome"}'.length);
  });

  it('OpenAI chat: OpenRouter-style `reasoning` is counted too', () => {
    const u = call('https://openrouter.ai/api/v1/chat/completions', { id: 'c', choices: [{ index: 0, message: { role: 'assistant', content: 'Yes', reasoning: 'Think.' } }] });
    expect(u).toMatchObject({ incomplete: true, streamedText: 'Yes', details: { streamed_other_chars: 6 } });
  });

  it('Responses: function calls, custom tool input, MCP arguments, interpreter code, reasoning and refusals are counted', () => {
    const response = {
      id: 'resp_1',
      object: 'response',
      status: 'completed',
      model: 'gpt-5',
      output: [
        { type: 'reasoning', id: 'rs', summary: [{ type: 'summary_text', text: 'Summary.' }], content: [{ type: 'reasoning_text', text: 'Raw thought.' }] },
        { type: 'function_call', id: 'fc', call_id: 'c1', name: 'weather', arguments: '{"city":"Paris"}' },
        { type: 'custom_tool_call', id: 'ct', call_id: 'c2', name: 'grammar', input: 'SELECT 1' },
        { type: 'mcp_call', id: 'mc', name: 'search', server_label: 's', arguments: '{"q":"x"}' },
        { type: 'code_interpreter_call', id: 'ci', code: 'print(1)' },
        { type: 'message', id: 'm', role: 'assistant', content: [{ type: 'output_text', text: 'Done.' }, { type: 'refusal', refusal: 'Not that.' }] },
      ],
    };
    const u = call('https://api.openai.com/v1/responses', response);
    expect(u).toMatchObject({ billable: false, incomplete: true, streamedText: 'Done.', details: { reason: 'no_usage' } });
    const other = ['Summary.', 'Raw thought.', '{"city":"Paris"}', 'SELECT 1', '{"q":"x"}', 'print(1)', 'Not that.'];
    expect(u.details.streamed_other_chars).toBe(other.join('').length);
  });

  it('Anthropic: thinking and tool_use input (as the JSON generated) are counted', () => {
    const input = { city: 'Paris', days: 3 };
    const body = {
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'claude-sonnet-4-6',
      content: [
        { type: 'thinking', thinking: 'Let me look it up.', signature: 'sig' },
        { type: 'text', text: 'Looking.' },
        { type: 'tool_use', id: 'tu', name: 'weather', input },
      ],
      stop_reason: 'tool_use',
    };
    const u = call('https://api.anthropic.com/v1/messages', body);
    expect(u).toMatchObject({ billable: false, incomplete: true, streamedText: 'Looking.', details: { reason: 'no_usage' } });
    expect(u.details.streamed_other_chars).toBe('Let me look it up.'.length + JSON.stringify(input).length);
  });

  it('Gemini: functionCall parts and thought parts are counted (a body without usageMetadata)', () => {
    const args = { city: 'Paris' };
    const body = {
      candidates: [{ content: { role: 'model', parts: [{ text: 'Plan.', thought: true }, { text: 'Calling.' }, { functionCall: { name: 'weather', args } }] }, finishReason: 'STOP' }],
      modelVersion: 'gemini-2.5-flash',
    };
    const u = call('https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent', body);
    expect(u).toMatchObject({ billable: false, incomplete: true, streamedText: 'Calling.' });
    expect(u.details.streamed_other_chars).toBe('Plan.'.length + JSON.stringify(args).length);
  });

  it('Cohere v2: the visible text, the tool plan and the tool-call arguments are counted', () => {
    const args = '{"location":"Paris"}';
    const body = {
      id: 'co',
      finish_reason: 'TOOL_CALL',
      message: {
        role: 'assistant',
        tool_plan: 'I will look up the weather.',
        tool_calls: [{ id: 't', type: 'function', function: { name: 'weather', arguments: args } }],
        content: [{ type: 'text', text: 'One moment.' }],
      },
    };
    const u = call('https://api.cohere.com/v2/chat', body, { requestBody: { model: 'command-a-03-2025' } });
    expect(u).toMatchObject({ billable: false, incomplete: true, streamedText: 'One moment.', details: { reason: 'no_usage' } });
    expect(u.details.streamed_other_chars).toBe('I will look up the weather.'.length + args.length);
  });

  it('Cohere v1: the text of a chat without meta is kept for the estimate', () => {
    const u = call('https://api.cohere.com/v1/chat', { text: 'Hello there', generation_id: 'g', finish_reason: 'COMPLETE' }, { requestBody: { model: 'command-r' } });
    expect(u).toMatchObject({ incomplete: true, streamedText: 'Hello there' });
  });

  it('Bedrock Converse: the text, reasoning and tool input (as the JSON generated) are counted', () => {
    const input = { city: 'Paris' };
    const body = {
      output: { message: { role: 'assistant', content: [
        { reasoningContent: { reasoningText: { text: 'Think first.', signature: 'sig' } } },
        { text: 'Checking.' },
        { toolUse: { toolUseId: 't1', name: 'weather', input } },
      ] } },
      stopReason: 'tool_use',
      metrics: { latencyMs: 420 },
    };
    const u = call('https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-pro-v1%3A0/converse', body);
    expect(u).toMatchObject({ provider: 'bedrock', billable: false, incomplete: true, streamedText: 'Checking.', details: { reason: 'no_usage' } });
    expect(u.details.streamed_other_chars).toBe('Think first.'.length + JSON.stringify(input).length);
  });

  it('Bedrock InvokeModel without counts in its headers or body: each model family\'s output is kept', () => {
    const invoke = (model: string, body: object) => call(`https://bedrock-runtime.us-east-1.amazonaws.com/model/${model}/invoke`, body);
    const claude = invoke('anthropic.claude-haiku-4-5-20251001-v1%3A0', { id: 'msg', type: 'message', role: 'assistant', content: [{ type: 'text', text: 'Claude says.' }] });
    expect(claude).toMatchObject({ incomplete: true, streamedText: 'Claude says.', details: { reason: 'no_usage' } });
    const nova = invoke('amazon.nova-lite-v1%3A0', { output: { message: { role: 'assistant', content: [{ text: 'Nova says.' }] } }, stopReason: 'end_turn' });
    expect(nova).toMatchObject({ incomplete: true, streamedText: 'Nova says.' });
    expect(invoke('meta.llama3-8b-instruct-v1%3A0', { generation: 'Llama says.', stop_reason: 'stop' })).toMatchObject({ incomplete: true, streamedText: 'Llama says.' });
    expect(invoke('amazon.titan-text-express-v1', { results: [{ outputText: 'Titan says.', completionReason: 'FINISH' }] })).toMatchObject({ incomplete: true, streamedText: 'Titan says.' });
    expect(invoke('mistral.mistral-7b-instruct-v0%3A2', { outputs: [{ text: 'Mistral says.', stop_reason: 'stop' }] })).toMatchObject({ incomplete: true, streamedText: 'Mistral says.' });
    expect(invoke('mistral.mistral-large-2407-v1%3A0', { choices: [{ index: 0, message: { role: 'assistant', content: 'Large says.' } }] })).toMatchObject({ incomplete: true, streamedText: 'Large says.' });
  });
});

describe('Azure OpenAI in Azure Government (service endpoint openai.azure.us)', () => {
  const url = 'https://agency.openai.azure.us/openai/deployments/gpt4o-gov/chat/completions?api-version=2024-10-21';

  it('is detected as Azure OpenAI and routed by deployment', () => {
    expect(detectProvider(url)).toEqual({ provider: 'azure-openai', api: 'chat.completions' });
    expect(detectProvider('https://agency.openai.azure.us/openai/v1/responses')).toEqual({ provider: 'azure-openai', api: 'responses' });
  });

  it('its responses are normalized as Azure OpenAI', () => {
    const u = call(url, { id: 'c', model: 'gpt-4o-2024-05-13', choices: [{ index: 0, message: { role: 'assistant', content: 'Hi' } }], usage: { prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 } });
    expect(u).toMatchObject({ provider: 'azure-openai', api: 'chat.completions', model: 'gpt-4o-2024-05-13', inputTokens: 9, outputTokens: 1, billable: true });
  });

  it('the wildcard is one label, as for the commercial cloud', () => {
    expect(detectProvider('https://x.attacker.openai.azure.us/openai/deployments/d/chat/completions')).toBeNull();
    expect(detectProvider('https://openai.azure.us/openai/deployments/d/chat/completions')).toBeNull();
  });
});
