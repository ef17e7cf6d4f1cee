import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { ApolloServer, type ApolloServerPlugin } from '@apollo/server';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { expressMiddleware } from '@as-integrations/express5';
import express, { type Request } from 'express';
import { execute, GraphQLError, getOperationAST, parse, subscribe, validate, type DocumentNode, type ExecutionArgs, type ExecutionResult } from 'graphql';
import type { SubscribePayload } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Context } from './context.ts';
import { formatGraphQLError } from './graphql/errors.ts';
import { inputFieldOf } from './graphql/input-field.ts';
import { handleCors } from './http/cors.ts';
import { documentTooDeep, enforceQueryLimits, type QueryLimits } from './graphql/limits.ts';
import { schema } from './graphql/schema.ts';
import { subscriptionRootDirectiveError, subscriptionRootDirectiveErrorIn } from './graphql/subscription-rules.ts';
import { answerClientError, errorHandler, sendError } from './http/errors.ts';
import { jsonBody } from './http/json-body.ts';
import { playgroundHtml } from './http/playground.ts';
import { FORWARD_PATH } from './modules/gateway/gateway.service.ts';
import { usageRoutes } from './modules/usage/usage.http.ts';
import { usageAccessRoutes } from './modules/limits/usage-access.http.ts';
import { ANONYMOUS, credentialFrom, type Viewer } from './modules/auth/viewer.ts';
import type { Services } from './services.ts';
import { pendingMigrations } from './shared/db/migrator.ts';
import { AppError, httpStatusFor } from './shared/errors.ts';
import { currentRequestId, runWithRequestId } from './shared/request-context.ts';

/**
 * HTTP routes, Apollo Server and graphql-ws on one port. Returns the server unstarted so
 * main.ts (and tests) decide where it listens.
 */
export interface App {
  httpServer: Server;
  listen(port: number, host: string): Promise<{ url: string; port: number }>;
  close(): Promise<void>;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * WebSocket close code for a customer over its connection limit: an application code (4000-4999)
 * that graphql-ws does not use (its 4429 means a repeated connection_init, and its clients give up
 * on it), so clients retry with backoff, by when another tab may have closed.
 */
const TOO_MANY_SOCKETS = 4029;

/** What ends an operation's start (see oneStartPerId), by its context: once it has run or its subscription is made. */
const startEnds = new WeakMap<object, () => void>();

/**
 * graphql-ws onSubscribe that refuses (CONFLICT) an operation whose id is that of one still
 * starting on the socket (credentials checked, the subscription being made). graphql-ws frees an
 * id the moment its client completes it, even mid-start; a `subscribe` under it then makes the
 * started operation take the newcomer's place, and the one of the two it no longer holds runs on,
 * unseen: never ended by a `complete`, nor when the socket closes, nor counted against
 * TOLLGATE_WS_MAX_OPERATIONS, its listener kept (and its events resolved) for as long as the
 * process lives. Subscribing, completing and subscribing again under one id, in a loop, piled
 * them up without bound. The id is free again once the first has started (and been ended).
 */
function oneStartPerId<C extends { extra: { starting?: Set<string> } }>(
  start: (ctx: C, payload: SubscribePayload) => Promise<ExecutionArgs | GraphQLError[]>,
): (ctx: C, id: string, payload: SubscribePayload) => Promise<ExecutionArgs | GraphQLError[]> {
  return async (ctx, id, payload) => {
    const starting = (ctx.extra.starting ??= new Set());
    if (starting.has(id)) {
      return [new GraphQLError(`Operation ${id} is still starting: use another id, or wait until it has ended`, { extensions: { code: 'CONFLICT' } })];
    }
    starting.add(id);
    let started: ExecutionArgs | GraphQLError[] | undefined;
    try {
      started = await start(ctx, payload);
      return started;
    } finally {
      const end = () => void starting.delete(id);
      if (started && !Array.isArray(started) && typeof started.contextValue === 'object' && started.contextValue !== null) startEnds.set(started.contextValue, end);
      else end();
    }
  };
}

/** Runs (or subscribes to) an operation oneStartPerId admitted, then frees its id for another start. */
async function whenStarted<R>(args: ExecutionArgs, run: (args: ExecutionArgs) => R): Promise<Awaited<R>> {
  try {
    return await run(args);
  } finally {
    const context = args.contextValue as object;
    startEnds.get(context)?.();
    startEnds.delete(context);
  }
}

function isForwardPath(url: string | undefined): boolean {
  if (!url?.startsWith(FORWARD_PATH)) return false;
  const next = url.charAt(FORWARD_PATH.length);
  return next === '' || next === '?' || next === '/';
}

/** The Authorization value in a JSON headers object (any letter case), if it is a string. */
function authorizationIn(headers: unknown): string | undefined {
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) return undefined;
  const entry = Object.entries(headers).find(([name, value]) => name.toLowerCase() === 'authorization' && typeof value === 'string');
  return entry?.[1] as string | undefined;
}

/**
 * A customer session token is short-lived: a subscription it opened must not outlive it. The
 * socket is closed with 4401 when the token expires; the app reconnects with a fresh one (graphql-ws's client does not retry 4401 itself).
 */
function closeWhenSessionExpires(socket: WebSocket, viewer: Viewer): void {
  // Closed while its credential was being checked: its 'close' has fired, and would never clear
  // the timer, which then held the socket until the token expired (up to a day).
  if (viewer.kind !== 'customer' || socket.readyState === socket.CLOSED) return;
  // One timer per socket, at the soonest expiry of the tokens it has acted with: operations that
  // carry their own token (the playground's) each added a timer and a 'close' listener, kept
  // until the socket closed.
  const scheduled = sessionCloses.get(socket);
  const at = viewer.expiresAt.getTime();
  if (scheduled && scheduled.at <= at) return;
  if (scheduled) clearTimeout(scheduled.timer);
  else socket.once('close', () => clearTimeout(sessionCloses.get(socket)?.timer));
  // setTimeout's limit is about 24.8 days; session tokens live far less.
  const delay = Math.min(Math.max(at - Date.now(), 0), 2 ** 31 - 1);
  const timer = setTimeout(() => socket.close(4401, 'Customer session expired'), delay);
  timer.unref();
  sessionCloses.set(socket, { at, timer });
}

/** The close each socket of customer sessions has scheduled (see closeWhenSessionExpires). */
const sessionCloses = new WeakMap<WebSocket, { at: number; timer: NodeJS.Timeout }>();

/**
 * Sockets opened (or operations authorized) with a secret key, checked every `intervalMs` against
 * the keys still active: a socket whose key was revoked, or whose rotation grace period ended, is
 * closed with 4403, on every instance, and its subscriptions end with it. Sockets acting for a
 * customer (its session token on the connection, or on any of its operations) are closed the same
 * way once that customer is archived.
 */
/** Open sockets of one kind, at most `limit` at once; each counts until it closes. */
class SocketCount {
  private open = 0;

  constructor(private readonly limit: number) {}

  admit(socket: WebSocket): boolean {
    // Closed while its credential was being checked: its 'close' has fired, nothing to count.
    if (socket.readyState !== socket.OPEN) return true;
    if (this.open >= this.limit) return false;
    this.open++;
    socket.once('close', () => this.open--);
    return true;
  }
}

class SocketsByApiKey {
  private readonly keysOf = new Map<WebSocket, Set<string>>();
  /** A socket may act for several customers: GraphiQL sends a token with each operation. */
  private readonly customersOf = new Map<WebSocket, Set<string>>();
  private readonly socketsOfCustomer = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly services: Services,
    private readonly logger: Services['logger'],
    intervalMs: number,
  ) {
    this.timer = setInterval(() => void this.closeRevoked(), intervalMs);
    this.timer.unref();
  }

  /**
   * Whether `socket` may act for this customer: it already does, or the customer holds fewer than
   * `limit` sockets on this instance. A browser needs one per tab; a token copied into a loop
   * must not hold unbounded sockets (each keeps its subscriptions' listeners in memory).
   */
  admitsCustomer(socket: WebSocket, customerId: string, limit: number): boolean {
    if (this.customersOf.get(socket)?.has(customerId)) return true;
    return (this.socketsOfCustomer.get(customerId) ?? 0) < limit;
  }

  watch(socket: WebSocket, viewer: Viewer): void {
    // Closed while its credential was being checked: its 'close' has fired, nothing is left to watch.
    if (socket.readyState !== socket.OPEN) return;
    if (viewer.kind === 'customer') this.watchCustomer(socket, viewer.customerId);
    // A customer's socket ends with the key that minted its token, as a merchant's with its key.
    const keyId = viewer.kind === 'merchant' ? viewer.apiKeyId : viewer.kind === 'customer' ? viewer.mintedBy : null;
    if (!keyId) return;
    const keys = this.keysOf.get(socket);
    if (keys) return void keys.add(keyId);
    this.keysOf.set(socket, new Set([keyId]));
    socket.once('close', () => this.keysOf.delete(socket));
  }

  /** Counts the socket once against each customer it acts for, until it closes. */
  private watchCustomer(socket: WebSocket, customerId: string): void {
    let customers = this.customersOf.get(socket);
    if (customers?.has(customerId)) return;
    if (!customers) {
      const watched = new Set<string>();
      customers = watched;
      this.customersOf.set(socket, watched);
      socket.once('close', () => {
        this.customersOf.delete(socket);
        for (const id of watched) {
          const left = this.socketsOfCustomer.get(id)! - 1;
          if (left > 0) this.socketsOfCustomer.set(id, left);
          else this.socketsOfCustomer.delete(id);
        }
      });
    }
    customers.add(customerId);
    this.socketsOfCustomer.set(customerId, (this.socketsOfCustomer.get(customerId) ?? 0) + 1);
  }

  async closeRevoked(): Promise<void> {
    try {
      if (this.keysOf.size > 0) {
        const active = await this.services.apiKeys.activeIds([...new Set([...this.keysOf.values()].flatMap((keys) => [...keys]))]);
        for (const [socket, keys] of this.keysOf) {
          if ([...keys].some((id) => !active.has(id))) socket.close(4403, 'API key revoked');
        }
      }
      if (this.customersOf.size > 0) {
        const archived = await this.services.customerSessions.archivedAmong([...new Set([...this.customersOf.values()].flatMap((ids) => [...ids]))]);
        for (const [socket, customerIds] of this.customersOf) {
          if ([...customerIds].some((id) => archived.has(id))) socket.close(4403, 'Customer archived');
        }
      }
    } catch (error) {
      this.logger.warn({ err: error }, 'checking WebSocket credentials failed; will retry');
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

export async function createApp(services: Services): Promise<App> {
  const { config, logger } = services;
  const limits: QueryLimits = {
    maxDepth: config.maxQueryDepth,
    maxComplexity: config.maxQueryComplexity,
    defaultPageSize: 20,
  };

  const app = express();
  app.disable('x-powered-by');
  // An API's answers are not cached by validators: hashing every (batch-sized) JSON body for an
  // ETag is work nobody uses.
  app.disable('etag');
  // Gateway calls skip Express entirely: every microsecond here is latency added to an AI call,
  // and the gateway reads its own raw body and answers its own errors.
  const httpServer = createServer((req, res) => {
    if (handleCors(req, res, config.corsOrigins)) return;
    if (isForwardPath(req.url)) void services.gateway.handle(req, res);
    else app(req, res);
  });
  // Outlive the idle timeouts of clients and load balancers (commonly 60 s), so the server
  // never closes a kept-alive connection just as a client reuses it (an ECONNRESET).
  httpServer.keepAliveTimeout = 65_000;
  httpServer.headersTimeout = 66_000;
  httpServer.on('clientError', answerClientError);

  const viewerFor = async (authorization: string | undefined | null): Promise<Viewer> => {
    try {
      return await services.viewers.resolve(authorization);
    } catch (error) {
      if (error instanceof AppError) {
        throw new GraphQLError(error.message, { extensions: { code: error.code, ...error.details, http: { status: httpStatusFor(error.code) } } });
      }
      throw error;
    }
  };

  // --- subscriptions over graphql-ws, same port and path ---
  // The same size limit as HTTP bodies (ws would otherwise take messages of up to 100 MiB).
  // Upgrades are handed over by hand (noServer) rather than through `server`: ws would then also
  // re-emit the HTTP server's errors, and graphql-ws prints a port already in use as an internal
  // error with its stack before the start can say it in one line.
  const wsServer = new WebSocketServer({ noServer: true, path: '/graphql', maxPayload: config.maxBodyBytes });
  httpServer.on('upgrade', (req, socket, head) => wsServer.handleUpgrade(req, socket, head, (ws) => wsServer.emit('connection', ws, req)));
  const keySockets = new SocketsByApiKey(services, logger, config.wsKeyRecheckMs);
  const anonymousSockets = new SocketCount(config.wsMaxAnonymousSockets);
  const wsCleanup = useServer<Record<string, unknown>, { viewer?: Viewer; requestId?: string; authorization?: string; starting?: Set<string> }>(
    {
      schema,
      onConnect: async (ctx) => {
        const params = ctx.connectionParams ?? {};
        const headers = (params.headers ?? {}) as Record<string, unknown>;
        const authorization = [params.authorization, params.Authorization, headers.authorization, headers.Authorization].find(
          (value): value is string => typeof value === 'string',
        );
        try {
          ctx.extra.authorization = authorization ?? credentialFrom(ctx.extra.request.headers.authorization);
          ctx.extra.viewer = await services.viewers.resolve(ctx.extra.authorization);
          ctx.extra.requestId = randomUUID();
          if (ctx.extra.viewer.kind === 'customer' && !keySockets.admitsCustomer(ctx.extra.socket, ctx.extra.viewer.customerId, config.wsMaxCustomerSockets)) {
            // Closed before graphql-ws's generic 4403, so the client can tell a limit from a bad token.
            ctx.extra.socket.close(TOO_MANY_SOCKETS, `This customer already holds ${config.wsMaxCustomerSockets} open connections`);
            return false;
          }
          // Anyone may open one (GraphiQL sends its credential with each operation, not here), so
          // they are capped: a loop opening them would otherwise hold unbounded sockets.
          if (ctx.extra.viewer.kind === 'anonymous' && !anonymousSockets.admit(ctx.extra.socket)) {
            ctx.extra.socket.close(TOO_MANY_SOCKETS, `${config.wsMaxAnonymousSockets} connections without a credential are open: send one as the authorization connection parameter`);
            return false;
          }
          closeWhenSessionExpires(ctx.extra.socket, ctx.extra.viewer);
          keySockets.watch(ctx.extra.socket, ctx.extra.viewer);
          return true;
        } catch (error) {
          // An expired session token gets the code an open socket gets when its token expires (4401,
          // which graphql-ws's client does not retry), so the app fetches a fresh token instead of
          // retrying this one; other refusals get graphql-ws's 4403 Forbidden.
          if (error instanceof AppError && error.details.reason === 'SESSION_EXPIRED') ctx.extra.socket.close(4401, 'Customer session expired');
          // Not a refusal: the check itself failed (the database not answering). 1013 (try again
          // later), which graphql-ws's client retries, rather than a 4403 that blames the credential.
          else if (!(error instanceof AppError)) ctx.extra.socket.close(1013, 'The credential could not be checked: try again');
          return false;
        }
      },
      onSubscribe: oneStartPerId(async (ctx, payload) => {
        // graphql-ws has already counted this operation among the socket's own.
        if (Object.keys(ctx.subscriptions).length > config.wsMaxOperations) {
          return [
            new GraphQLError(`This connection already runs ${config.wsMaxOperations} operations: complete one before starting another`, {
              extensions: { code: 'RATE_LIMITED' },
            }),
          ];
        }
        // graphql-ws parses and runs operations itself, so the HTTP path's checks are repeated here.
        // Named as over HTTP: the input at fault (`currency`), found from the error's nodes.
        const invalid = (error: unknown) => {
          const field = inputFieldOf(error);
          const reason = (error as GraphQLError).extensions?.reason;
          return [new GraphQLError((error as Error).message, { extensions: { code: 'VALIDATION', ...(field ? { field } : {}), ...(reason ? { reason } : {}) } })];
        };
        const tooDeep = documentTooDeep(payload.query);
        if (tooDeep) return invalid(tooDeep);
        let document: DocumentNode;
        let errors: readonly GraphQLError[];
        try {
          document = parse(payload.query);
          const skipped = subscriptionRootDirectiveError(document);
          if (skipped) return invalid(skipped);
          errors = validate(schema, document);
        } catch (error) {
          return invalid(error);
        }
        if (errors.length > 0) return errors.map(invalid).flat();
        const operation = getOperationAST(document, payload.operationName);
        if (!operation) return invalid(new Error('Name the operation to run'));
        try {
          enforceQueryLimits(limits, schema, document, operation, payload.variables ?? undefined);
        } catch (error) {
          return invalid(error);
        }
        // Browsers cannot set headers on a WebSocket, and GraphiQL (the playground) sends an empty
        // connection_init: it puts its Headers editor's JSON in each subscribe message's
        // extensions.headers instead. Honour that credential for this operation only, and only
        // when the connection itself carried none.
        let viewer: Viewer = ctx.extra.viewer ?? ANONYMOUS;
        const operationAuthorization = viewer.kind === 'anonymous' ? authorizationIn(payload.extensions?.headers) : undefined;
        // A secret key or session token is checked again for every operation: one revoked (or
        // whose customer was archived) since the socket opened runs nothing more (SocketsByApiKey
        // closes the socket itself soon after).
        const authorization = operationAuthorization ?? (viewer.kind !== 'anonymous' ? ctx.extra.authorization : undefined);
        if (authorization !== undefined) {
          try {
            viewer = await services.viewers.resolve(authorization);
            // The socket's own credential is watched since it connected.
            if (operationAuthorization !== undefined) {
              if (viewer.kind === 'customer' && !keySockets.admitsCustomer(ctx.extra.socket, viewer.customerId, config.wsMaxCustomerSockets)) {
                return [new GraphQLError(`This customer already holds ${config.wsMaxCustomerSockets} open connections`, { extensions: { code: 'RATE_LIMITED' } })];
              }
              closeWhenSessionExpires(ctx.extra.socket, viewer);
              keySockets.watch(ctx.extra.socket, viewer);
            }
          } catch (error) {
            if (error instanceof AppError) return [new GraphQLError(error.message, { extensions: { code: error.code, ...error.details } })];
            // Not a refusal: the check itself failed (the database not answering). Thrown on, it
            // reached graphql-ws, which closes the socket with 4500 (its clients never reconnect
            // after it) and the error's message as the reason. Failed as this operation's INTERNAL
            // error instead, logged under the request id like any other (onError formats it).
            return [new GraphQLError(error instanceof Error ? error.message : String(error), { originalError: error instanceof Error ? error : undefined })];
          }
        }
        const contextValue: Context = {
          viewer,
          services,
          requestId: ctx.extra.requestId ?? randomUUID(),
          logger,
          maxResolvedFields: limits.maxComplexity,
        };
        return { schema, document, operationName: payload.operationName, variableValues: payload.variables, contextValue };
      }),
      execute: (args) => whenStarted(args, execute),
      subscribe: (args) => whenStarted(args, subscribe),
      onNext: (ctx, _id, _payload, _args, result) => formatResult(result, ctx.extra.requestId),
      onError: (ctx, _id, _payload, errors) => errors.map((error) => formatGraphQLError(error.toJSON(), error, logger, ctx.extra.requestId)),
    },
    wsServer,
  );

  function formatResult(result: ExecutionResult, requestId: string | undefined) {
    if (!result.errors?.length) return result;
    return { ...result, errors: result.errors.map((error) => formatGraphQLError(error.toJSON(), error, logger, requestId)) };
  }

  // --- Apollo ---
  const limitsPlugin: ApolloServerPlugin<Context> = {
    async requestDidStart() {
      return {
        async didResolveOperation({ document, operation, request, schema: runSchema }) {
          if (!operation) return; // Apollo has already rejected an operation it could not find
          if (operation.operation === 'subscription') {
            throw new GraphQLError('Subscriptions are served over WebSocket (graphql-ws protocol) at /graphql', {
              extensions: { code: 'VALIDATION', reason: 'SUBSCRIPTION_OVER_HTTP', http: { status: 400 } },
            });
          }
          enforceQueryLimits(limits, runSchema, document, operation, request.variables);
        },
      };
    },
  };

  const apollo = new ApolloServer<Context>({
    schema,
    introspection: true,
    includeStacktraceInErrorResponses: false,
    // main.ts stops the server on SIGINT/SIGTERM itself (app, then database). Apollo's own
    // handlers (on outside NODE_ENV=test) would stop it first, and the second stop() then waits
    // forever: the process never exited and the embedded database stayed locked.
    stopOnTerminationSignals: false,
    // Apollo's own messages go through pino (levels, request ids, redaction), not the console.
    logger,
    formatError: (formatted, error) => formatGraphQLError(formatted, error, logger),
    plugins: [
      ApolloServerPluginDrainHttpServer({ httpServer }),
      ApolloServerPluginLandingPageDisabled(),
      limitsPlugin,
      {
        async serverWillStart() {
          return {
            async drainServer() {
              keySockets.stop();
              await wsCleanup.dispose();
            },
          };
        },
      },
    ],
  });
  await apollo.start();

  // --- HTTP ---
  app.use((req, res, next) => {
    const incoming = req.header('x-request-id');
    const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    res.setHeader('x-request-id', requestId);
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      logger.info(
        { requestId, method: req.method, path: req.path, status: res.statusCode, ms: Number(process.hrtime.bigint() - started) / 1e6 },
        'request',
      );
    });
    runWithRequestId(requestId, next);
  });

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', async (_req, res) => {
    try {
      await services.prisma.$queryRaw`SELECT 1`;
      const pending = await pendingMigrations(services.db);
      if (pending.length > 0) {
        res.status(503).json({ status: 'migrations pending', pending });
        return;
      }
      res.json({ status: 'ready', database: services.db.kind });
    } catch (error) {
      logger.warn({ err: error }, 'readiness check failed');
      res.status(503).json({ status: 'database unreachable' });
    }
  });

  const wantsPlayground = (req: Request) =>
    req.method === 'GET' && req.accepts(['application/json', 'application/graphql-response+json', 'text/html']) === 'text/html' && !req.query.query;

  app.get('/playground', (_req, res) => {
    res.type('html').send(playgroundHtml());
  });

  app.use(
    '/graphql',
    (req, res, next) => (wantsPlayground(req) ? res.type('html').send(playgroundHtml()) : next()),
    ...jsonBody({ limit: config.maxBodyBytes, type: ['application/json', 'application/graphql-response+json'] }),
    (req, res, next) => {
      const query: unknown = (req.body as { query?: unknown } | undefined)?.query ?? req.query.query;
      // A GET's `query` given twice arrives as a list, of which Apollo runs the first.
      const queries = Array.isArray(query) ? query : [query];
      // Documents graphql-js cannot validate without throwing (a 500) are refused before Apollo's turn.
      const error = queries.map((text) => (typeof text === 'string' ? (documentTooDeep(text) ?? subscriptionRootDirectiveErrorIn(text)) : undefined)).find(Boolean);
      if (error) {
        res.status(400).json({ errors: [{ message: error.message, extensions: error.extensions }] });
        return;
      }
      next();
    },
    expressMiddleware(apollo, {
      context: async ({ req }): Promise<Context> => ({
        viewer: await viewerFor(req.headers.authorization),
        services,
        requestId: currentRequestId() ?? randomUUID(),
        logger,
        maxResolvedFields: limits.maxComplexity,
      }),
    }),
  );

  app.use(usageRoutes(services));
  app.use(usageAccessRoutes(services));

  app.use((req, res) => {
    sendError(req, res, 404, 'NOT_FOUND', `No route for ${req.method} ${req.path}`);
  });
  app.use(errorHandler(logger));

  return {
    httpServer,
    listen(port, host) {
      return new Promise((resolve, reject) => {
        httpServer.once('error', reject);
        httpServer.listen(port, host, () => {
          const address = httpServer.address();
          const actualPort = typeof address === 'object' && address ? address.port : port;
          resolve({ url: `http://${host}:${actualPort}`, port: actualPort });
        });
      });
    },
    async close() {
      // Stops taking requests; connections still open after Apollo's grace period (a gateway
      // stream, say) are cut. The gateway calls they carried end then, and are charged and
      // logged before the database closes.
      await apollo.stop();
      await services.gateway.close();
      if (httpServer.listening) await new Promise<void>((resolve) => httpServer.close(() => resolve()));
    },
  };
}
