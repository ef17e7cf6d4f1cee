import { resolveCursorConnection } from '../../graphql/connections.ts';
import type { GatewayHost, GatewayRequest } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';
import { encodeCreatedCursor } from '../../shared/pagination.ts';
import { requireUuid } from '../../shared/validation.ts';
import { MerchantRef } from '../merchants/merchants.graphql.ts';

const GatewayHostRef = builder.objectRef<GatewayHost>('GatewayHost').implement({
  description: 'A host you added to the gateway allow-list, with the provider format it speaks. Known providers are allowed without this.',
  fields: (t) => ({
    id: t.exposeID('id'),
    host: t.exposeString('host', { description: 'host, host:port, or *.domain' }),
    provider: t.exposeString('provider', { description: 'Provider id whose usage format and key header the host uses (e.g. openai-compatible).' }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

const GatewayOutcomeEnum = builder.enumType('GatewayOutcome', {
  description: 'How a forwarded call ended.',
  values: {
    COMPLETED: { description: 'The provider answered and the response was relayed whole.' },
    UPSTREAM_ERROR: { description: 'The provider answered 4xx/5xx: relayed unchanged, not charged.' },
    REFUSED: { description: 'Refused before the provider was called (credential, allow-list, credit, blocked customer).' },
    TIMEOUT: { description: 'The provider did not answer in time (504) or stalled mid-stream.' },
    UNREACHABLE: { description: 'The provider could not be reached (502).' },
    CLIENT_ABORTED: { description: 'The caller left before the response ended; the provider call was aborted and charged per the incomplete-stream policy.' },
  } as const,
});

const GatewayRequestRef = builder.objectRef<GatewayRequest>('GatewayRequest').implement({
  description: 'One call through the gateway: what it asked for, how it went and how long it took.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Also sent to the caller as the x-tollgate-request-id response header.' }),
    customerId: t.exposeID('customerId', { nullable: true }),
    provider: t.exposeString('provider', { nullable: true }),
    method: t.exposeString('method'),
    host: t.exposeString('host'),
    path: t.exposeString('path'),
    status: t.exposeInt('status', { description: 'HTTP status the caller received.' }),
    outcome: t.field({ type: GatewayOutcomeEnum, resolve: (row) => row.outcome }),
    errorCode: t.exposeString('errorCode', { nullable: true, description: 'Why Tollgate answered instead of the provider (INSUFFICIENT_FUNDS, CUSTOMER_BLOCKED, …).' }),
    streamed: t.exposeBoolean('streamed'),
    latencyMs: t.exposeInt('latencyMs', { description: 'From receiving the call to sending its last byte.' }),
    ttfbMs: t.exposeInt('ttfbMs', { nullable: true, description: "From receiving the call to relaying the provider's first body byte." }),
    usageEventId: t.exposeID('usageEventId', { nullable: true, description: 'The usage event that charged this call, if it was billable.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

builder.objectField(MerchantRef, 'gatewayCallerProviderKeys', (t) =>
  t.exposeBoolean('gatewayCallerProviderKeys', { authScopes: { merchant: true }, description: 'Whether gateway callers may send their own provider key in x-tollgate-provider-key (secret key only).' }),
);

builder.objectField(MerchantRef, 'gatewayReserveMaxCost', (t) =>
  t.exposeBoolean('gatewayReserveMaxCost', { authScopes: { merchant: true }, description: "Whether the gateway holds each call's maximum cost (from max_tokens or equivalent) before calling the provider (secret key only)." }),
);

builder.queryField('gatewayHosts', (t) =>
  t.field({
    type: [GatewayHostRef],
    authScopes: { merchant: true },
    resolve: (_root, _args, ctx) => ctx.services.gatewaySettings.hosts(merchantIdOf(ctx)),
  }),
);

builder.mutationField('putGatewayHost', (t) =>
  t.field({
    type: GatewayHostRef,
    description:
      'Allows the gateway to forward to a host of yours (self-hosted or OpenAI-compatible). Without a port ("llm.example.com") it is reached over https on 443 only; name the port ("llm.example.com:80") to allow plain http or another port. Private addresses stay refused unless the server allows them.',
    authScopes: { merchant: true },
    args: { host: t.arg.string({ required: true }), provider: t.arg.string({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.gatewaySettings.putHost(merchantIdOf(ctx), args),
  }),
);

builder.mutationField('removeGatewayHost', (t) =>
  t.field({
    type: GatewayHostRef,
    authScopes: { merchant: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.gatewaySettings.removeHost(merchantIdOf(ctx), String(args.id)),
  }),
);

builder.mutationField('updateGatewaySettings', (t) =>
  t.field({
    type: MerchantRef,
    authScopes: { merchant: true },
    args: {
      callerProviderKeys: t.arg.boolean({ description: 'Let callers send their own provider key in x-tollgate-provider-key.' }),
      reserveMaxCost: t.arg.boolean({
        description: "Hold each call's maximum cost (max_tokens or equivalent, at today's price and your rules) before calling the provider, and settle it after: concurrent calls can never spend more than the customer has. Costs a database round trip per call.",
      }),
    },
    resolve: (_root, args, ctx) => ctx.services.gatewaySettings.update(merchantIdOf(ctx), args),
  }),
);

builder.queryField('gatewayRequests', (t) =>
  t.connection({
    type: GatewayRequestRef,
    description: 'Calls through the gateway, newest first.',
    authScopes: { merchant: true },
    args: { customerId: t.arg.id(), outcome: t.arg({ type: GatewayOutcomeEnum }) },
    resolve: (_root, args, ctx) => {
      // Checked here: Prisma fails a non-UUID id as an internal error.
      const customerId = args.customerId != null ? requireUuid('customerId', String(args.customerId)) : null;
      return resolveCursorConnection<Promise<GatewayRequest[]>>(
        { args, toCursor: (row: GatewayRequest) => encodeCreatedCursor(row), defaultSize: 20, maxSize: 100 },
        (page) => ctx.services.gateway.requestsPage(merchantIdOf(ctx), { customerId, outcome: args.outcome ?? null }, page),
      );
    },
  }),
);

builder.queryField('gatewayRequest', (t) =>
  t.field({
    type: GatewayRequestRef,
    nullable: true,
    authScopes: { merchant: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.gateway.request(merchantIdOf(ctx), String(args.id)),
  }),
);
