/**
 * Every supported provider: its id, the hosts it answers on, and how a URL path maps to one of
 * its APIs (and to the normalizer for that API's response shape).
 */
import { anthropicMessages } from './anthropic.ts';
import { bedrockConverse, bedrockConverseStream, bedrockInvoke, bedrockInvokeStream } from './bedrock.ts';
import { cohere } from './cohere.ts';
import { geminiGenerate, imagenPredict } from './gemini.ts';
import { bfl, fal, imageList, imagePoll, replicate, stability } from './images.ts';
import {
  openaiChat,
  openaiEmbeddings,
  openaiImages,
  openaiResponses,
  openaiSpeech,
  openaiTranscription,
} from './openai.ts';
import { deepgramListen, deepgramSpeak, elevenLabsTts } from './speech.ts';
import type { Normalizer } from './util.ts';

/** One API of a provider, as resolved from a URL. */
export interface Match {
  api: string;
  normalize: Normalizer;
  /** A model named by the URL itself. */
  model: string | null;
  /**
   * What the URL names in place of a model, taken as the model only when neither the response
   * nor the request names one (an Azure deployment: images and audio responses name no model).
   */
  fallbackModel?: string | null;
  /**
   * The HTTP method that calls it: POST for a create, GET to poll a job by its id. The same path
   * often answers other methods with stored data (GET /v1/chat/completions lists completions).
   */
  method: 'POST' | 'GET' | 'PUT';
}

export interface UrlParts {
  host: string;
  /** Path without query or trailing slash ("" for the root). */
  path: string;
  query: string;
}

type Router = (url: UrlParts) => Match | null;

/** Public description of a supported provider (for docs and allow-lists). */
export interface SupportedProvider {
  id: string;
  name: string;
  /** Exact hosts, or patterns with one `*` standing for one or more characters. */
  hosts: readonly string[];
  /** Other names accepted for `ProviderResponse.provider`. */
  aliases: readonly string[];
  /** The API ids its responses are reported under. */
  apis: readonly string[];
}

interface Definition extends SupportedProvider {
  route: Router;
}

const m = (api: string, normalize: Normalizer, model: string | null = null, method: Match['method'] = 'POST'): Match => ({ api, normalize, model, method });

// --- OpenAI-shape APIs, shared by OpenAI, Azure and the OpenAI-compatible family -------------

const CHAT = m('chat.completions', openaiChat);
const COMPLETIONS = m('completions', openaiChat);
const FIM = m('fim.completions', openaiChat);
const RESPONSES = m('responses', openaiResponses);
const EMBEDDINGS = m('embeddings', openaiEmbeddings);
const IMAGE_GENERATIONS = m('images.generations', openaiImages);
const IMAGE_EDITS = m('images.edits', openaiImages);
const IMAGE_VARIATIONS = m('images.variations', openaiImages);
const TRANSCRIPTIONS = m('audio.transcriptions', openaiTranscription);
const TRANSLATIONS = m('audio.translations', openaiTranscription);
const SPEECH = m('audio.speech', openaiSpeech);
const MESSAGES = m('messages', anthropicMessages);

const OPENAI_APIS = [
  'chat.completions',
  'completions',
  'responses',
  'embeddings',
  'images.generations',
  'images.edits',
  'images.variations',
  'audio.transcriptions',
  'audio.translations',
  'audio.speech',
] as const;
/** What the shared router can resolve on an OpenAI-compatible host (each provider offers a subset). */
const COMPAT_APIS = [...OPENAI_APIS, 'fim.completions', 'messages'] as const;

/** By path suffix, so each provider's own prefix (/v1, /openai/v1, /inference/v1, …) works. */
function openaiPath(path: string): Match | null {
  if (path.endsWith('/chat/completions')) return CHAT;
  if (path.endsWith('/completions')) return path.endsWith('/fim/completions') ? FIM : COMPLETIONS;
  if (path.endsWith('/responses')) return RESPONSES;
  if (path.endsWith('/embeddings')) return EMBEDDINGS;
  if (path.endsWith('/images/generations')) return IMAGE_GENERATIONS;
  if (path.endsWith('/images/edits')) return IMAGE_EDITS;
  if (path.endsWith('/images/variations')) return IMAGE_VARIATIONS;
  if (path.endsWith('/audio/transcriptions')) return TRANSCRIPTIONS;
  if (path.endsWith('/audio/translations')) return TRANSLATIONS;
  if (path.endsWith('/audio/speech')) return SPEECH;
  // Anthropic-compatible endpoints several providers offer beside their OpenAI one.
  if (path.endsWith('/v1/messages')) return MESSAGES;
  return null;
}
const openaiRouter: Router = (url) => openaiPath(url.path);

/** Azure routes by deployment (/openai/deployments/{name}/…), a name the merchant chose for a model. */
const azureRouter: Router = ({ path }) => {
  const match = openaiPath(path);
  const deployment = match && segmentAfter(path, '/deployments/', path.length);
  return deployment ? { ...match, fallbackModel: deployment } : match;
};

// --- Google: Gemini API and Vertex AI -------------------------------------------------------

function segmentAfter(path: string, marker: string, end: number): string | null {
  const at = path.lastIndexOf(marker, end);
  if (at === -1) return null;
  const start = at + marker.length;
  const slash = path.indexOf('/', start);
  const stop = slash === -1 || slash > end ? end : slash;
  return stop > start ? safeDecode(path.slice(start, stop)) : null;
}

function googleMethod(path: string, allowRaw: boolean): Match | null {
  const colon = path.lastIndexOf(':');
  if (colon === -1 || colon < path.lastIndexOf('/')) return null;
  const method = path.slice(colon + 1);
  const model = segmentAfter(path, '/models/', colon) ?? segmentAfter(path, '/tunedModels/', colon);
  switch (method) {
    case 'generateContent':
    case 'streamGenerateContent':
      return m(method, geminiGenerate, model);
    case 'predict':
      return model?.startsWith('imagen') ? m('predict', imagenPredict, model) : null;
    case 'rawPredict':
    case 'streamRawPredict':
      if (!allowRaw) return null;
      // Claude's …/models/count-tokens:rawPredict counts a request's tokens for free (as Anthropic's
      // own /v1/messages/count_tokens): no API, so nothing billable and nothing to estimate. Read
      // from the last segment, so no tail of the path (findProviderPath) routes it either.
      if (path.slice(path.lastIndexOf('/', colon) + 1, colon) === 'count-tokens') return null;
      // Partner models on Vertex answer in their own shape: Claude as Anthropic Messages,
      // the others (Mistral, Llama, …) as OpenAI chat completions.
      return segmentAfter(path, '/publishers/', colon) === 'anthropic'
        ? m('messages', anthropicMessages, model)
        : m('chat.completions', openaiChat, model);
    default:
      return null;
  }
}

const googleRouter: Router = ({ path }) => (path.includes('/openai/') ? openaiPath(path) : googleMethod(path, false));
const vertexRouter: Router = ({ path }) =>
  path.includes('/endpoints/openapi/') ? openaiPath(path) : googleMethod(path, true);

// --- AWS Bedrock ----------------------------------------------------------------------------

const BEDROCK_PATH = /^\/model\/([^/]+)\/(converse|converse-stream|invoke|invoke-with-response-stream)$/;
const BEDROCK: Record<string, Normalizer> = {
  converse: bedrockConverse,
  'converse-stream': bedrockConverseStream,
  invoke: bedrockInvoke,
  'invoke-with-response-stream': bedrockInvokeStream,
};
const bedrockRouter: Router = ({ path }) => {
  const match = BEDROCK_PATH.exec(path);
  if (match) return m(match[2]!, BEDROCK[match[2]!]!, safeDecode(match[1]!));
  return path.endsWith('/chat/completions') ? CHAT : null;
};

// --- Others ---------------------------------------------------------------------------------

/** Messages, and the OpenAI-compatible chat completions Anthropic serves beside it (its OpenAI SDK compatibility). */
const anthropicRouter: Router = ({ path }) => (path.endsWith('/v1/messages') ? MESSAGES : path.endsWith('/v1/chat/completions') ? CHAT : null);

const cohereRouter: Router = ({ path }) => {
  if (path.startsWith('/compatibility/')) return openaiPath(path);
  if (path === '/v1/chat' || path === '/v2/chat') return m('chat', cohere);
  if (path === '/v1/embed' || path === '/v2/embed') return m('embed', cohere);
  if (path === '/v1/rerank' || path === '/v2/rerank') return m('rerank', cohere);
  return null;
};

const elevenLabsRouter: Router = ({ path }) => {
  if (path.startsWith('/v1/text-to-speech/')) return m('text-to-speech', elevenLabsTts);
  if (path.startsWith('/v1/text-to-dialogue')) return m('text-to-dialogue', elevenLabsTts);
  return null;
};

const deepgramRouter: Router = ({ path, query }) => {
  if (path === '/v1/listen') return m('listen', deepgramListen, queryParam(query, 'model'));
  if (path === '/v1/speak') return m('speak', deepgramSpeak, queryParam(query, 'model'));
  return null;
};

const stabilityRouter: Router = ({ path }) => {
  const parts = path.split('/');
  // /v2beta/stable-image/{generate|edit|control|upscale}/{variant}
  if (parts[1] === 'v2beta' && parts[2] === 'stable-image' && parts[3]) {
    return m(`stable-image.${parts[3]}`, stability, parts[4] ?? null);
  }
  if (parts[1] === 'v2beta' && parts[2] === 'results') return m('results', imagePoll, null, 'GET');
  // /v1/generation/{engine}/{text-to-image|image-to-image|…}
  if (parts[1] === 'v1' && parts[2] === 'generation' && parts[3]) return m('generation', stability, parts[3]);
  return null;
};

/**
 * The part of a path that is a fal app's. fal's own hosts serve apps from the root
 * (`fal.run/fal-ai/flux/dev`); a proxy puts its prefix first and names fal in it (Cloudflare AI
 * Gateway's `/v1/{account}/{gateway}/fal/fal-ai/flux/dev`): the app starts after that `fal`
 * segment, or else at a `fal-ai/` app, so the prefix never becomes part of the app's name (which
 * is the model that prices it). Any path is some app's, so findProviderPath's search for a tail
 * would stop at the first one.
 */
function falAppPath(host: string, path: string): string {
  if (host === 'fal.run' || host.endsWith('.fal.run')) return path;
  // A prefix ending in `fal` (trailing slash dropped) names fal and no app.
  const named = `${path}/`.indexOf('/fal/');
  if (named !== -1) return path.slice(named + '/fal'.length);
  const owner = path.indexOf('/fal-ai/');
  return owner === -1 ? path : path.slice(owner);
}

const falRouter: Router = ({ host, path: fullPath }) => {
  const path = falAppPath(host, fullPath);
  const requests = path.indexOf('/requests/');
  if (requests !== -1) {
    const app = path.slice(1, requests);
    const tail = path.slice(requests + '/requests/'.length);
    // …/requests/{id} (the result) and …/requests/{id}/status are read; …/requests/{id}/cancel is a PUT.
    if (!tail.includes('/')) return m('queue.result', fal, app, 'GET');
    return m('queue.status', imagePoll, app, tail.endsWith('/cancel') ? 'PUT' : 'GET');
  }
  if (path.length <= 1) return null;
  return m(host === 'queue.fal.run' ? 'queue.submit' : 'run', fal, path.slice(1));
};

/**
 * Where Replicate's API starts in a path: after its `/v1`, or at once where a proxy stands for
 * `https://api.replicate.com/v1` (Cloudflare AI Gateway's `…/replicate/predictions`).
 */
export function replicateRoot(parts: readonly string[]): number {
  return parts[1] === 'v1' ? 2 : 1;
}

const replicateRouter: Router = ({ path }) => {
  const parts = path.split('/');
  const root = replicateRoot(parts);
  if (parts[root] === 'predictions') {
    if (parts.length === root + 1) return m('predictions', replicate);
    // A poll by id: billed once the prediction has succeeded.
    if (parts.length === root + 2) return m('predictions', replicate, null, 'GET');
    return m('predictions', imagePoll, null, parts[root + 2] === 'cancel' ? 'POST' : 'GET');
  }
  // /v1/models/{owner}/{name}/predictions, /v1/deployments/{owner}/{name}/predictions
  if ((parts[root] === 'models' || parts[root] === 'deployments') && parts[root + 3] === 'predictions' && parts.length === root + 4) {
    return m('predictions', replicate, `${parts[root + 1]}/${parts[root + 2]}`);
  }
  return null;
};

const bflRouter: Router = ({ path }) => {
  const parts = path.split('/');
  if (parts[1] !== 'v1' || !parts[2] || parts.length !== 3) return null;
  if (parts[2] === 'get_result') return m('get_result', imagePoll, null, 'GET');
  if (parts[2] === 'credits' || parts[2].startsWith('finetune')) return null;
  return m('generate', bfl, parts[2]);
};

const ideogramRouter: Router = ({ path }) => {
  const parts = path.split('/');
  // Legacy /generate, /edit, /remix, /upscale; v3 /v1/ideogram-v3/{generate|edit|remix|reframe|…}
  if (parts.length === 2 && ['generate', 'edit', 'remix', 'upscale', 'reframe'].includes(parts[1]!)) return m(parts[1]!, imageList);
  if (parts[1] === 'v1' && parts[2]?.startsWith('ideogram-') && parts[3]) return m(parts[3], imageList, parts[2]);
  return null;
};

const recraftRouter: Router = ({ path }) => {
  if (path.endsWith('/images/generations')) return m('images.generations', imageList);
  if (path.includes('/images/')) return m(`images.${path.slice(path.lastIndexOf('/') + 1)}`, imageList);
  return null;
};

// --- The table --------------------------------------------------------------------------------

function compat(id: string, name: string, hosts: string[], aliases: string[] = []): Definition {
  return { id, name, hosts, aliases, apis: COMPAT_APIS, route: openaiRouter };
}

const DEFINITIONS: Definition[] = [
  // Projects with data residency call their region's host ({us,eu,gb,ae,…}.api.openai.com, some
  // required, as OpenAI's data residency guide says); only OpenAI's own subdomains match.
  { id: 'openai', name: 'OpenAI', hosts: ['api.openai.com', '*.api.openai.com'], aliases: [], apis: OPENAI_APIS, route: openaiRouter },
  {
    id: 'azure-openai',
    name: 'Azure OpenAI / Azure AI Foundry',
    // Azure Government's service endpoint is openai.azure.us (Microsoft's "Azure OpenAI in Azure
    // Government"). Azure China (21Vianet) is left out until its host is confirmed from documentation.
    hosts: ['*.openai.azure.com', '*.cognitiveservices.azure.com', '*.services.ai.azure.com', '*.openai.azure.us'],
    aliases: ['azure'],
    // Claude in Foundry answers Anthropic Messages at {resource}.services.ai.azure.com/anthropic/v1/messages.
    apis: [...OPENAI_APIS, 'messages'],
    route: azureRouter,
  },
  { id: 'anthropic', name: 'Anthropic', hosts: ['api.anthropic.com'], aliases: ['claude'], apis: ['messages', 'chat.completions'], route: anthropicRouter },
  {
    id: 'google',
    name: 'Google Gemini API',
    hosts: ['generativelanguage.googleapis.com'],
    aliases: ['gemini', 'google-ai-studio'],
    // Its OpenAI compatibility serves embeddings and image generation beside chat completions.
    apis: ['generateContent', 'streamGenerateContent', 'predict', 'chat.completions', 'embeddings', 'images.generations'],
    route: googleRouter,
  },
  {
    id: 'vertex',
    name: 'Google Vertex AI',
    // Global, regional ({region}-) and multi-region (aiplatform.{us,eu}.rep.) endpoints.
    hosts: ['aiplatform.googleapis.com', '*-aiplatform.googleapis.com', 'aiplatform.*.rep.googleapis.com'],
    aliases: ['vertex-ai', 'google-vertex'],
    apis: ['generateContent', 'streamGenerateContent', 'predict', 'messages', 'chat.completions'],
    route: vertexRouter,
  },
  {
    id: 'bedrock',
    name: 'AWS Bedrock',
    hosts: ['bedrock-runtime.*.amazonaws.com', 'bedrock-runtime-fips.*.amazonaws.com'],
    aliases: ['aws-bedrock', 'amazon-bedrock'],
    apis: ['converse', 'converse-stream', 'invoke', 'invoke-with-response-stream', 'chat.completions'],
    route: bedrockRouter,
  },
  { id: 'cohere', name: 'Cohere', hosts: ['api.cohere.com', 'api.cohere.ai'], aliases: [], apis: ['chat', 'embed', 'rerank', 'chat.completions', 'embeddings'], route: cohereRouter },
  compat('groq', 'Groq', ['api.groq.com']),
  compat('together', 'Together AI', ['api.together.xyz', 'api.together.ai'], ['together-ai']),
  // Transcriptions are served from their own hosts (Fireworks' audio API reference: audio-prod, audio-turbo).
  compat('fireworks', 'Fireworks AI', ['api.fireworks.ai', 'audio-prod.api.fireworks.ai', 'audio-turbo.api.fireworks.ai'], ['fireworks-ai']),
  // Regional inference (docs.mistral.ai, regional-inference): api.eu.mistral.ai, api.us.mistral.ai.
  compat('mistral', 'Mistral AI', ['api.mistral.ai', 'api.eu.mistral.ai', 'api.us.mistral.ai', 'codestral.mistral.ai']),
  compat('deepseek', 'DeepSeek', ['api.deepseek.com']),
  // Regional endpoints (docs.x.ai, regions): https://<region-name>.api.x.ai, and us.api.x.ai.
  compat('xai', 'xAI', ['api.x.ai', '*.api.x.ai'], ['grok']),
  compat('openrouter', 'OpenRouter', ['openrouter.ai']),
  compat('perplexity', 'Perplexity', ['api.perplexity.ai']),
  compat('cerebras', 'Cerebras', ['api.cerebras.ai']),
  compat('deepinfra', 'DeepInfra', ['api.deepinfra.com']),
  compat('nebius', 'Nebius AI Studio', ['api.studio.nebius.ai', 'api.studio.nebius.com', 'api.tokenfactory.nebius.com']),
  compat('hyperbolic', 'Hyperbolic', ['api.hyperbolic.xyz']),
  compat('sambanova', 'SambaNova', ['api.sambanova.ai']),
  compat('novita', 'Novita AI', ['api.novita.ai'], ['novita-ai']),
  compat('lepton', 'Lepton AI', ['*.lepton.run']),
  compat('moonshot', 'Moonshot AI (Kimi)', ['api.moonshot.ai', 'api.moonshot.cn'], ['kimi']),
  compat('alibaba', 'Alibaba Cloud Model Studio (Qwen)', ['dashscope.aliyuncs.com', 'dashscope-intl.aliyuncs.com', 'dashscope-us.aliyuncs.com'], ['dashscope', 'qwen']),
  compat('zhipu', 'Zhipu AI / Z.ai (GLM)', ['open.bigmodel.cn', 'api.z.ai'], ['zai', 'z.ai', 'zhipuai']),
  compat('siliconflow', 'SiliconFlow', ['api.siliconflow.cn', 'api.siliconflow.com']),
  compat('nvidia', 'NVIDIA NIM', ['integrate.api.nvidia.com']),
  compat('huggingface', 'Hugging Face Inference Providers', ['router.huggingface.co']),
  compat('github-models', 'GitHub Models', ['models.github.ai', 'models.inference.ai.azure.com']),
  compat('ai21', 'AI21 Labs', ['api.ai21.com']),
  compat('featherless', 'Featherless AI', ['api.featherless.ai']),
  compat('friendli', 'FriendliAI', ['api.friendli.ai']),
  compat('baseten', 'Baseten', ['inference.baseten.co']),
  compat('minimax', 'MiniMax', ['api.minimax.io', 'api.minimaxi.com']),
  {
    id: 'elevenlabs',
    name: 'ElevenLabs',
    hosts: ['api.elevenlabs.io', 'api.us.elevenlabs.io', 'api.eu.residency.elevenlabs.io', 'api.in.residency.elevenlabs.io'],
    aliases: [],
    apis: ['text-to-speech', 'text-to-dialogue'],
    route: elevenLabsRouter,
  },
  { id: 'deepgram', name: 'Deepgram', hosts: ['api.deepgram.com', 'api.eu.deepgram.com'], aliases: [], apis: ['listen', 'speak'], route: deepgramRouter },
  {
    id: 'stability',
    name: 'Stability AI',
    hosts: ['api.stability.ai'],
    aliases: ['stability-ai'],
    apis: ['stable-image.generate', 'stable-image.edit', 'stable-image.control', 'stable-image.upscale', 'generation', 'results'],
    route: stabilityRouter,
  },
  { id: 'fal', name: 'fal', hosts: ['fal.run', 'queue.fal.run', '*.fal.run'], aliases: ['fal-ai'], apis: ['run', 'queue.submit', 'queue.result', 'queue.status'], route: falRouter },
  { id: 'replicate', name: 'Replicate', hosts: ['api.replicate.com'], aliases: [], apis: ['predictions'], route: replicateRouter },
  {
    id: 'bfl',
    name: 'Black Forest Labs',
    // docs.bfl.ai (integration guidelines): the global api.bfl.ai, the multi-cluster api.eu. and
    // api.us., and the legacy single-cluster api.eu1. and api.us1. (finetuning; BFL's API
    // reference and the polling_url of a create name them too). api.bfl.ml is the former domain.
    hosts: ['api.bfl.ai', 'api.eu.bfl.ai', 'api.us.bfl.ai', 'api.eu1.bfl.ai', 'api.us1.bfl.ai', 'api.bfl.ml'],
    aliases: ['black-forest-labs', 'flux'],
    apis: ['generate', 'get_result'],
    route: bflRouter,
  },
  {
    id: 'ideogram',
    name: 'Ideogram',
    hosts: ['api.ideogram.ai'],
    aliases: [],
    apis: ['generate', 'edit', 'remix', 'upscale', 'reframe', 'replace-background'],
    route: ideogramRouter,
  },
  { id: 'recraft', name: 'Recraft', hosts: ['external.api.recraft.ai'], aliases: [], apis: ['images.generations'], route: recraftRouter },
  // No hosts: only by explicit override, for self-hosted servers (vLLM, Ollama, LiteLLM, …).
  { id: 'openai-compatible', name: 'Any OpenAI-compatible server', hosts: [], aliases: ['vllm', 'ollama', 'litellm'], apis: COMPAT_APIS, route: openaiRouter },
];

/** Every supported provider with its hosts; stable order. */
export const SUPPORTED_PROVIDERS: readonly SupportedProvider[] = Object.freeze(
  DEFINITIONS.map(({ id, name, hosts, aliases, apis }) => Object.freeze({ id, name, hosts, aliases, apis })),
);

// --- Lookup -----------------------------------------------------------------------------------

const BY_HOST = new Map<string, Definition>();
const BY_NAME = new Map<string, Definition>();
/** An AWS region's name (us-east-1, eu-central-2, us-gov-west-1). */
const AWS_REGION = /^[a-z]{2}(-[a-z]+)+-\d{1,2}$/;

/**
 * Host patterns: `*` stands for one DNS label (a resource, a region), never for several — so
 * `*.openai.azure.com` is not `x.attacker.openai.azure.com` — and under amazonaws.com only for a
 * region's name: `bedrock-runtime.s3.amazonaws.com` is an S3 bucket's host, not Bedrock's.
 */
const PATTERNS: { prefix: string; suffix: string; label: RegExp | null; definition: Definition }[] = [];
for (const definition of DEFINITIONS) {
  BY_NAME.set(definition.id, definition);
  for (const alias of definition.aliases) BY_NAME.set(alias, definition);
  for (const host of definition.hosts) {
    const star = host.indexOf('*');
    if (star === -1) BY_HOST.set(host, definition);
    else {
      const suffix = host.slice(star + 1);
      PATTERNS.push({ prefix: host.slice(0, star), suffix, label: suffix === '.amazonaws.com' ? AWS_REGION : null, definition });
    }
  }
}

export function definitionForHost(host: string): Definition | undefined {
  const exact = BY_HOST.get(host);
  if (exact) return exact;
  for (const p of PATTERNS) {
    if (host.length <= p.prefix.length + p.suffix.length || !host.startsWith(p.prefix) || !host.endsWith(p.suffix)) continue;
    const label = host.slice(p.prefix.length, host.length - p.suffix.length);
    if (!label.includes('.') && (!p.label || p.label.test(label))) return p.definition;
  }
  return undefined;
}

/**
 * The provider id for a provider's id or alias ("claude" → "anthropic", "gemini" → "google"), so
 * usage, price rows and rules written under either name meet. A name Tollgate does not know (a
 * merchant's own provider) comes back trimmed, as given.
 */
export function canonicalProviderId(name: string): string {
  const trimmed = name.trim();
  return BY_NAME.get(trimmed.toLowerCase())?.id ?? trimmed;
}

export function definitionForName(name: string): Definition | undefined {
  return BY_NAME.get(name.trim().toLowerCase());
}

export function route(definition: Definition, url: UrlParts): Match | null {
  return definition.route(url);
}

/**
 * How many segments a proxy's prefix may have (Cloudflare AI Gateway's /v1/{account}/{gateway}/{provider}
 * has four). Bounds the routing of a long path: each tail tried is routed anew, and the gateway
 * routes every call before it is refused or forwarded.
 */
const MAX_PREFIX_SEGMENTS = 8;

/** A URL routed to one of a provider's APIs, and the provider's own path within it. */
export interface ProviderPath {
  match: Match;
  /** The URL as the provider's router read it: past a proxy's prefix, its path is the tail that matched. */
  parts: UrlParts;
}

/**
 * The API of a URL sent to a provider named explicitly, whatever host it went through, with the
 * part of the path that is the provider's. A proxy in front of the provider (Cloudflare AI
 * Gateway's /v1/{account}/{gateway}/{provider}/…, a company gateway's own prefix) puts its own
 * segments before the provider's API root, and the routers that match whole paths would miss
 * it: when the whole path is not one of the provider's, it is tried from each of the next few
 * segments on (MAX_PREFIX_SEGMENTS), and the longest tail the provider knows wins. Metering, admission, holds and job ids all read
 * a call through this one function, so they agree on what a prefixed call is.
 */
export function findProviderPath(definition: Definition, url: UrlParts): ProviderPath | null {
  const match = definition.route(url);
  if (match) return { match, parts: url };
  const { path } = url;
  let tried = 0;
  for (let slash = path.indexOf('/', 1); slash !== -1 && tried < MAX_PREFIX_SEGMENTS; slash = path.indexOf('/', slash + 1)) {
    // An empty segment ("//") starts no API root; skipping it keeps a path of slashes cheap.
    if (path.charCodeAt(slash + 1) === 47 /* / */) continue;
    tried++;
    const tail = { ...url, path: path.slice(slash) };
    const tailMatch = definition.route(tail);
    if (tailMatch) return { match: tailMatch, parts: tail };
  }
  return null;
}

/** The API of a URL sent to a provider named explicitly (see findProviderPath). */
export function routeNamed(definition: Definition, url: UrlParts): Match | null {
  return findProviderPath(definition, url)?.match ?? null;
}

/**
 * Host, path and query of a URL without allocating a URL object (hot path). Spaces and control
 * characters around it are dropped, as a URL parser drops them: a URL read from a file or an
 * environment variable with its line end was matched to no API (`…/completions\n`), and the
 * call recorded free as a path that bills nothing.
 */
export function splitUrl(url: string): UrlParts {
  if (url.charCodeAt(0) <= 32 || url.charCodeAt(url.length - 1) <= 32) url = trimControls(url);
  let start = url.indexOf('://');
  start = start === -1 ? (url.startsWith('//') ? 2 : 0) : start + 3;
  let end = start;
  if (url.charCodeAt(start) !== 47 /* a bare path */) {
    while (end < url.length) {
      const c = url.charCodeAt(end);
      if (c === 47 || c === 63 || c === 35) break;
      end++;
    }
  }
  let host = url.slice(start, end);
  const at = host.lastIndexOf('@');
  if (at !== -1) host = host.slice(at + 1);
  const colon = host.lastIndexOf(':');
  if (colon !== -1 && !host.endsWith(']')) host = host.slice(0, colon);
  host = host.toLowerCase();
  if (host.endsWith('.')) host = host.slice(0, -1);

  let pathEnd = url.length;
  const q = url.indexOf('?', end);
  const hash = url.indexOf('#', end);
  if (hash !== -1) pathEnd = hash;
  if (q !== -1 && q < pathEnd) pathEnd = q;
  let path = url.slice(end, pathEnd);
  while (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
  if (path === '/') path = '';
  const query = q !== -1 && q < (hash === -1 ? url.length : hash) ? url.slice(q + 1, hash === -1 ? url.length : hash) : '';
  return { host, path, query };
}

/** The text without the C0 controls and spaces at its ends (WHATWG URL parsing strips those). */
function trimControls(text: string): string {
  let from = 0;
  let to = text.length;
  while (from < to && text.charCodeAt(from) <= 32) from++;
  while (to > from && text.charCodeAt(to - 1) <= 32) to--;
  return text.slice(from, to);
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function queryParam(query: string, name: string): string | null {
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    if (eq !== -1 && pair.slice(0, eq) === name) return safeDecode(pair.slice(eq + 1).replaceAll('+', ' ')) || null;
  }
  return null;
}
