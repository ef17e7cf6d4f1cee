import { withCanonicalRates, type ProviderPrice, type TokenPrices } from './cost.ts';

/**
 * List prices that ship with Tollgate (USD, standard pay-as-you-go tier: no batch, flex or
 * priority), used when a merchant has no row of its own for a model. Two kinds of rows:
 *
 *  - the models the provider fixtures are costed with (shared/fixtures/providers/EXPECTED.md §2:
 *    the providers' published price pages as of 2026-11), in force from 2026-01-01;
 *  - common models of 2023–2025 (many are retired by now; their rows still cost late events of
 *    their time), each group below naming the price page and when its figures were read. Each row
 *    takes effect when its price was published, or at a later date from which it is known to
 *    have been in force: an event before that is not costed by it.
 *
 * Models are named as responses report them; a dated snapshot ("gpt-4o-mini-2024-07-18",
 * "claude-sonnet-4-20250514", "claude-opus-4-1@20250805") is priced by its undated row (see
 * modelMatchRank), a row for the dated name wins over it. Aliases that move to newer models
 * ("mistral-large-latest", "command-r-plus") are left out: the row would outlive the price.
 * Merchants add and override rows through GraphQL or a models.dev file; rows here are never
 * edited in place — a price change is a new row with a later effectiveFrom, so history stays.
 */
const SINCE_2026 = new Date('2026-01-01T00:00:00Z');

/** Rates written as price lists print them ("2.50"), served in their shortest form ("2.5") as stored rows are. */
const row = (provider: string, model: string, rest: Partial<ProviderPrice>): ProviderPrice => withCanonicalRates({
  provider,
  model,
  currency: 'USD',
  effectiveFrom: SINCE_2026,
  ...rest,
});

/** Midnight UTC of a day, for rows that take effect at a published date. */
const day = (date: string) => new Date(`${date}T00:00:00Z`);

/** One row per name, for models a provider serves under more than one undated name. */
const named = (provider: string, models: readonly string[], rest: Partial<ProviderPrice>): ProviderPrice[] =>
  models.map((model) => row(provider, model, rest));

// Anthropic prices the 1-hour cache write at 2× input, the 5-minute one at 1.25×, a read at 0.1×.
const SONNET_4: TokenPrices = { input: '3.00', cachedInput: '0.30', cacheWrite: '3.75', cacheWrite1h: '6.00', output: '15.00' };
/** Sonnet 4 / 4.5 with the 1M-token context window: a request above 200K input tokens is all at these rates. */
const SONNET_4_LONG = [{ aboveInputTokens: 200_000, perMillionTokens: { input: '6.00', cachedInput: '0.60', cacheWrite: '7.50', cacheWrite1h: '12.00', output: '22.50' } }];
const OPUS_4: TokenPrices = { input: '15.00', cachedInput: '1.50', cacheWrite: '18.75', cacheWrite1h: '30.00', output: '75.00' };

export const LIST_PRICES: readonly ProviderPrice[] = [
  row('openai', 'gpt-5.4', {
    perMillionTokens: { input: '2.50', cachedInput: '0.25', output: '15.00' },
    contextTiers: [{ aboveInputTokens: 272_000, perMillionTokens: { input: '5.00', cachedInput: '0.50', output: '22.50' } }],
  }),
  row('openai', 'gpt-5.4-mini', { perMillionTokens: { input: '0.75', cachedInput: '0.075', output: '4.50' } }),
  row('openai', 'gpt-5.6-sol', {
    perMillionTokens: { input: '5.00', cachedInput: '0.50', cacheWrite: '6.25', output: '30.00' },
    contextTiers: [{ aboveInputTokens: 272_000, perMillionTokens: { input: '10.00', cachedInput: '1.00', cacheWrite: '12.50', output: '45.00' } }],
  }),
  row('openai', 'text-embedding-3-small', { perMillionTokens: { input: '0.02' } }),
  row('openai', 'text-embedding-3-large', { perMillionTokens: { input: '0.13' } }),
  row('openai', 'whisper-1', { perAudioMinute: '0.006' }),
  row('anthropic', 'claude-opus-4-8', { perMillionTokens: { input: '5.00', cachedInput: '0.50', cacheWrite: '6.25', cacheWrite1h: '10.00', output: '25.00' } }),
  row('anthropic', 'claude-sonnet-4-6', { perMillionTokens: { input: '3.00', cachedInput: '0.30', cacheWrite: '3.75', cacheWrite1h: '6.00', output: '15.00' } }),
  row('anthropic', 'claude-haiku-4-5', { perMillionTokens: { input: '1.00', cachedInput: '0.10', cacheWrite: '1.25', cacheWrite1h: '2.00', output: '5.00' } }),
  row('google', 'gemini-3.8-flash', { perMillionTokens: { input: '0.75', cachedInput: '0.075', output: '3.75' } }),
  row('google', 'gemini-3.8-flash', {
    effectiveFrom: new Date('2027-01-01T00:00:00Z'),
    perMillionTokens: { input: '1.50', cachedInput: '0.15', output: '7.50' },
  }),
  row('deepseek', 'deepseek-v4-flash', { perMillionTokens: { input: '0.14', cachedInput: '0.028', output: '0.28' } }),
  row('deepseek', 'deepseek-v4-flash', {
    effectiveFrom: new Date('2026-04-26T12:15:00Z'),
    perMillionTokens: { input: '0.14', cachedInput: '0.0028', output: '0.28' },
  }),

  // OpenAI: platform.openai.com/docs/pricing, as known in 2025 (standard tier), from each model's
  // launch. gpt-4o: from 2024-10-02, when the undated name moved to the $2.50 snapshot (the
  // 2024-05-13 snapshot keeps $5/$15 under its own row). o3: from the day after its 2025-06-10
  // price cut ($10/$2.50/$40 before; not listed). Reasoning tokens are output tokens.
  row('openai', 'gpt-4o', { effectiveFrom: day('2024-10-02'), perMillionTokens: { input: '2.50', cachedInput: '1.25', output: '10.00' } }),
  row('openai', 'gpt-4o-2024-05-13', { effectiveFrom: day('2024-05-13'), perMillionTokens: { input: '5.00', output: '15.00' } }),
  row('openai', 'gpt-4o-mini', { effectiveFrom: day('2024-07-18'), perMillionTokens: { input: '0.15', cachedInput: '0.075', output: '0.60' } }),
  row('openai', 'gpt-4.1', { effectiveFrom: day('2025-04-14'), perMillionTokens: { input: '2.00', cachedInput: '0.50', output: '8.00' } }),
  row('openai', 'gpt-4.1-mini', { effectiveFrom: day('2025-04-14'), perMillionTokens: { input: '0.40', cachedInput: '0.10', output: '1.60' } }),
  row('openai', 'gpt-4.1-nano', { effectiveFrom: day('2025-04-14'), perMillionTokens: { input: '0.10', cachedInput: '0.025', output: '0.40' } }),
  row('openai', 'o1', { effectiveFrom: day('2024-12-17'), perMillionTokens: { input: '15.00', cachedInput: '7.50', output: '60.00' } }),
  row('openai', 'o3-mini', { effectiveFrom: day('2025-01-31'), perMillionTokens: { input: '1.10', cachedInput: '0.55', output: '4.40' } }),
  row('openai', 'o3', { effectiveFrom: day('2025-06-11'), perMillionTokens: { input: '2.00', cachedInput: '0.50', output: '8.00' } }),
  row('openai', 'o4-mini', { effectiveFrom: day('2025-04-16'), perMillionTokens: { input: '1.10', cachedInput: '0.275', output: '4.40' } }),
  row('openai', 'gpt-5', { effectiveFrom: day('2025-08-07'), perMillionTokens: { input: '1.25', cachedInput: '0.125', output: '10.00' } }),
  row('openai', 'gpt-5-mini', { effectiveFrom: day('2025-08-07'), perMillionTokens: { input: '0.25', cachedInput: '0.025', output: '2.00' } }),
  row('openai', 'gpt-5-nano', { effectiveFrom: day('2025-08-07'), perMillionTokens: { input: '0.05', cachedInput: '0.005', output: '0.40' } }),
  row('openai', 'text-embedding-ada-002', { effectiveFrom: day('2023-01-01'), perMillionTokens: { input: '0.10' } }),
  // Per character of the request's input text; per image by the request's size and quality.
  row('openai', 'tts-1', { effectiveFrom: day('2023-11-06'), perMillionCharacters: '15.00' }),
  row('openai', 'tts-1-hd', { effectiveFrom: day('2023-11-06'), perMillionCharacters: '30.00' }),
  row('openai', 'dall-e-3', {
    effectiveFrom: day('2023-11-06'),
    perImageBy: {
      '1024x1024/standard': '0.04', '1024x1792/standard': '0.08', '1792x1024/standard': '0.08',
      '1024x1024/hd': '0.08', '1024x1792/hd': '0.12', '1792x1024/hd': '0.12',
    },
  }),
  row('openai', 'dall-e-2', { effectiveFrom: day('2023-11-06'), perImageBy: { '1024x1024': '0.02', '512x512': '0.018', '256x256': '0.016' } }),
  // GPT Image: billed by tokens, the images' dearer than text (input images $10 against text's $5,
  // output images $40; cached image input at the cached text rate here, $1.25 against $2.50: the
  // images API's usage splits input_tokens_details into text_tokens and image_tokens only, and
  // reports no cached tokens by modality, so cached image tokens cannot be told apart).
  row('openai', 'gpt-image-1', { effectiveFrom: day('2025-04-23'), perMillionTokens: { input: '5.00', cachedInput: '1.25', inputImage: '10.00', output: '40.00', outputImage: '40.00' } }),
  // Audio models: developers.openai.com/api/docs/models/gpt-4o-audio-preview, …/gpt-4o-realtime-preview,
  // …/gpt-4o-mini-realtime-preview (read 2026-12; the pages state no date and give one price per
  // model). Text and audio tokens are priced apart (inputAudio / outputAudio); cached audio costs
  // what cached text does, so cachedInput covers both; gpt-4o-audio-preview lists no cache price.
  // Each from its snapshot's release. gpt-4o-audio-preview and gpt-4o-realtime-preview are listed
  // by dated name only: their undated aliases moved on from 2024-10-01 snapshots billed at other
  // audio rates, which these pages no longer give, so those snapshots stay unpriced. The mini
  // realtime model has had one snapshot, 2024-12-17, so its undated name is safe.
  row('openai', 'gpt-4o-audio-preview-2024-12-17', { effectiveFrom: day('2024-12-17'), perMillionTokens: { input: '2.50', inputAudio: '40.00', output: '10.00', outputAudio: '80.00' } }),
  row('openai', 'gpt-4o-audio-preview-2025-06-03', { effectiveFrom: day('2025-06-03'), perMillionTokens: { input: '2.50', inputAudio: '40.00', output: '10.00', outputAudio: '80.00' } }),
  row('openai', 'gpt-4o-realtime-preview-2024-12-17', {
    effectiveFrom: day('2024-12-17'),
    perMillionTokens: { input: '5.00', cachedInput: '2.50', inputAudio: '40.00', output: '20.00', outputAudio: '80.00' },
  }),
  row('openai', 'gpt-4o-realtime-preview-2025-06-03', {
    effectiveFrom: day('2025-06-03'),
    perMillionTokens: { input: '5.00', cachedInput: '2.50', inputAudio: '40.00', output: '20.00', outputAudio: '80.00' },
  }),
  row('openai', 'gpt-4o-mini-realtime-preview', {
    effectiveFrom: day('2024-12-17'),
    perMillionTokens: { input: '0.60', cachedInput: '0.30', inputAudio: '10.00', output: '2.40', outputAudio: '20.00' },
  }),
  // gpt-4o-mini-tts: developers.openai.com/ja-JP/api/docs/models/gpt-4o-mini-tts (read 2026-12; no
  // date stated): text input $0.60, audio output $12 per 1M tokens, one price for its snapshots
  // (2025-03-20, 2025-12-15), from the first. Its output is audio only, which a streamed call's
  // usage reports as output tokens. A call without a stream reports no tokens: it is metered by
  // its input's characters, which OpenAI does not price for this model, so its cost stays unknown.
  row('openai', 'gpt-4o-mini-tts', { effectiveFrom: day('2025-03-20'), perMillionTokens: { input: '0.60', output: '12.00' } }),

  // Anthropic: docs.anthropic.com/en/docs/about-claude/pricing, as known in 2025, from each
  // model's launch (Claude 3.5 Haiku from 2025-01-01: it launched at $1/$5 and was cut to
  // $0.80/$4 in December 2024). The "-latest" / "-4-0" aliases name one model each for good.
  row('anthropic', 'claude-opus-4-1', { effectiveFrom: day('2025-08-05'), perMillionTokens: OPUS_4 }),
  ...named('anthropic', ['claude-opus-4', 'claude-opus-4-0'], { effectiveFrom: day('2025-05-22'), perMillionTokens: OPUS_4 }),
  row('anthropic', 'claude-opus-4-5', {
    effectiveFrom: day('2025-11-24'),
    perMillionTokens: { input: '5.00', cachedInput: '0.50', cacheWrite: '6.25', cacheWrite1h: '10.00', output: '25.00' },
  }),
  row('anthropic', 'claude-sonnet-4-5', { effectiveFrom: day('2025-09-29'), perMillionTokens: SONNET_4, contextTiers: SONNET_4_LONG }),
  ...named('anthropic', ['claude-sonnet-4', 'claude-sonnet-4-0'], { effectiveFrom: day('2025-05-22'), perMillionTokens: SONNET_4, contextTiers: SONNET_4_LONG }),
  ...named('anthropic', ['claude-3-7-sonnet', 'claude-3-7-sonnet-latest'], { effectiveFrom: day('2025-02-24'), perMillionTokens: SONNET_4 }),
  ...named('anthropic', ['claude-3-5-haiku', 'claude-3-5-haiku-latest'], {
    effectiveFrom: day('2025-01-01'),
    perMillionTokens: { input: '0.80', cachedInput: '0.08', cacheWrite: '1.00', cacheWrite1h: '1.60', output: '4.00' },
  }),
  // Claude 3.5 Sonnet: the same pricing page, its copy that lists Opus 4.1 and "Claude Sonnet 3.5
  // (deprecated)" (2025; it states no date), at one price from the first snapshot's launch. Both
  // snapshots (-20240620, -20241022) are priced by the undated row; "claude-3-5-sonnet-v2" is
  // Vertex AI's name for the second ("claude-3-5-sonnet-v2@20241022", cloud.google.com's Claude
  // prompt-caching page), Bedrock's "anthropic.claude-3-5-sonnet-20241022-v2:0" needs no row.
  ...named('anthropic', ['claude-3-5-sonnet', 'claude-3-5-sonnet-v2'], { effectiveFrom: day('2024-06-20'), perMillionTokens: SONNET_4 }),
  row('anthropic', 'claude-3-haiku', {
    effectiveFrom: day('2024-03-13'),
    perMillionTokens: { input: '0.25', cachedInput: '0.03', cacheWrite: '0.30', cacheWrite1h: '0.50', output: '1.25' },
  }),

  // Google (Gemini API, paid tier): ai.google.dev/gemini-api/docs/pricing, as known in 2025, from
  // each model's GA. Audio input has its own rate; thinking tokens are output. Gemini 2.5 cache
  // reads were later cut to a tenth of input: models.dev's data shows the lower rates by
  // 2026-04-20 (and EXPECTED.md quotes $0.03 for 2.5 Flash), but the day of the cut is not known
  // here, so until 2026-04-20 cache reads are costed at the 2025 rates. Audio read from the cache
  // has its own context-caching price on the same page ("text / image / video" and "audio"):
  // 2.0 Flash $0.025 / $0.175; 2.5 Flash $0.075 / $0.25 at GA, $0.03 / $0.10 after the cut (the
  // page as of 2025-10-08). 2.5 Pro lists one cache price for every modality (no audio rate).
  ...named('google', ['gemini-2.0-flash', 'gemini-2.0-flash-001'], {
    effectiveFrom: day('2025-02-05'),
    perMillionTokens: { input: '0.10', cachedInput: '0.025', inputAudio: '0.70', cachedInputAudio: '0.175', output: '0.40' },
  }),
  row('google', 'gemini-2.5-flash', {
    effectiveFrom: day('2025-06-17'),
    perMillionTokens: { input: '0.30', cachedInput: '0.075', inputAudio: '1.00', cachedInputAudio: '0.25', output: '2.50' },
  }),
  row('google', 'gemini-2.5-flash', {
    effectiveFrom: day('2026-04-20'),
    perMillionTokens: { input: '0.30', cachedInput: '0.03', inputAudio: '1.00', cachedInputAudio: '0.10', output: '2.50' },
  }),
  row('google', 'gemini-2.5-pro', {
    effectiveFrom: day('2025-06-17'),
    perMillionTokens: { input: '1.25', cachedInput: '0.31', output: '10.00' },
    contextTiers: [{ aboveInputTokens: 200_000, perMillionTokens: { input: '2.50', cachedInput: '0.625', output: '15.00' } }],
  }),
  row('google', 'gemini-2.5-pro', {
    effectiveFrom: day('2026-04-20'),
    perMillionTokens: { input: '1.25', cachedInput: '0.125', output: '10.00' },
    contextTiers: [{ aboveInputTokens: 200_000, perMillionTokens: { input: '2.50', cachedInput: '0.25', output: '15.00' } }],
  }),
  // Gemini image models (same page; its copies read 2026-03-30 and 2026-07-22): billed by tokens,
  // the generated images' (candidatesTokensDetails modality IMAGE, see outputImage) far dearer than
  // text and thoughts. The page quotes them per image too, which is the same price: a 1024×1024
  // image is 1290 tokens on 2.5 Flash Image ($0.039), a 1K image 1120 on the 3.x models. Images in
  // the prompt are priced as its text; no cache rate is listed. 2.5 Flash Image from its GA
  // (Vertex AI model page); the previews from their release (deprecations page); the stable 3.x
  // names, whose launch day the pages do not give, from 2026-07-22, when the page listed them.
  row('google', 'gemini-2.5-flash-image', { effectiveFrom: day('2025-10-02'), perMillionTokens: { input: '0.30', output: '2.50', outputImage: '30.00' } }),
  row('google', 'gemini-3-pro-image-preview', { effectiveFrom: day('2025-11-20'), perMillionTokens: { input: '2.00', output: '12.00', outputImage: '120.00' } }),
  row('google', 'gemini-3.1-flash-image-preview', { effectiveFrom: day('2026-02-26'), perMillionTokens: { input: '0.50', output: '3.00', outputImage: '60.00' } }),
  row('google', 'gemini-3-pro-image', { effectiveFrom: day('2026-07-22'), perMillionTokens: { input: '2.00', output: '12.00', outputImage: '120.00' } }),
  row('google', 'gemini-3.1-flash-image', { effectiveFrom: day('2026-07-22'), perMillionTokens: { input: '0.50', output: '3.00', outputImage: '60.00' } }),
  row('google', 'gemini-3.1-flash-lite-image', { effectiveFrom: day('2026-07-22'), perMillionTokens: { input: '0.25', output: '1.50', outputImage: '30.00' } }),

  // Groq: groq.com/pricing, as listed in mid-2025 (on-demand).
  row('groq', 'llama-3.3-70b-versatile', { effectiveFrom: day('2025-07-01'), perMillionTokens: { input: '0.59', output: '0.79' } }),
  row('groq', 'llama-3.1-8b-instant', { effectiveFrom: day('2025-07-01'), perMillionTokens: { input: '0.05', output: '0.08' } }),

  // Mistral: mistral.ai/pricing, as listed in mid-2025. Versioned names only: the "-latest"
  // aliases have since moved to models with other prices (mistral-large-latest to Large 3).
  row('mistral', 'mistral-large-2411', { effectiveFrom: day('2025-07-01'), perMillionTokens: { input: '2.00', output: '6.00' } }),
  ...named('mistral', ['mistral-small-2503', 'mistral-small-2506'], { effectiveFrom: day('2025-07-01'), perMillionTokens: { input: '0.10', output: '0.30' } }),

  // Cohere: cohere.com/pricing, as listed in mid-2025. Cohere responses name no model, so the
  // request's name is priced; the bare "command-r-plus" / "command-r" aliases have pointed at
  // older models with other prices, so only the dated names are listed.
  ...named('cohere', ['command-a-03-2025', 'command-r-plus-08-2024'], { effectiveFrom: day('2025-07-01'), perMillionTokens: { input: '2.50', output: '10.00' } }),
  row('cohere', 'command-r-08-2024', { effectiveFrom: day('2025-07-01'), perMillionTokens: { input: '0.15', output: '0.60' } }),
  row('cohere', 'command-r7b-12-2024', { effectiveFrom: day('2025-07-01'), perMillionTokens: { input: '0.0375', output: '0.15' } }),
];
