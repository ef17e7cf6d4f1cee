import type { Customer, Prisma, PrismaClient } from '../../generated/prisma/client.ts';
import { AppError, conflict, invalidField, notFound } from '../../shared/errors.ts';
import { createdKeysetPage } from '../../shared/pagination.ts';
import { isUniqueViolation } from '../../shared/prisma-errors.ts';
import { atOrAfter, earlierThan } from '../../shared/times.ts';
import { ConfigChanges } from '../../shared/config-changes.ts';
import type { PubSub } from '../../shared/pubsub.ts';
import {
  holdsUnstorableText,
  isUuid,
  optionalEmail,
  optionalText,
  requireJsonObject,
  requireNonEmpty,
  requireStorableText,
} from '../../shared/validation.ts';

export interface CreateCustomerInput {
  externalId: string;
  email?: string | null;
  name?: string | null;
  metadata?: unknown;
}

export interface UpdateCustomerInput {
  externalId?: string | null;
  email?: string | null;
  name?: string | null;
  /** Replaces the whole metadata object. */
  metadata?: unknown;
}

export interface CustomerFilter {
  /** Default: active customers only. */
  status?: 'ACTIVE' | 'ARCHIVED' | 'ALL' | null;
  /** Case-insensitive substring of name, email or externalId. */
  search?: string | null;
  email?: string | null;
  externalIds?: readonly string[] | null;
  createdAfter?: Date | null;
  createdBefore?: Date | null;
}

/**
 * An archived customer's refusal (FORBIDDEN, reason CUSTOMER_ARCHIVED): what it no longer does
 * after `archivedAt` (new usage, charges, holds) is refused, naming when it was archived.
 */
export function customerArchived(customerId: string, archivedAt: Date, refused: string): AppError {
  return new AppError('FORBIDDEN', `Customer ${customerId} was archived at ${archivedAt.toISOString()}: ${refused} (unarchive it first)`, {
    field: 'customer', reason: 'CUSTOMER_ARCHIVED', customerId, archivedAt: archivedAt.toISOString(),
  });
}

/** The longest externalId create and update take. */
const MAX_EXTERNAL_ID_LENGTH = 255;

/**
 * Whether some customer could have this (trimmed) externalId: create refuses empty, over-long and
 * unstorable ones. An over-long one is not looked up either: a thousand aliased lookups of a 400 KB
 * variable sent the database 400 MB to compare, for ten seconds, from one request.
 */
const isStorableKey = (externalId: string) =>
  externalId.length > 0 && externalId.length <= MAX_EXTERNAL_ID_LENGTH && !holdsUnstorableText(externalId);

/** Prisma's `contains` becomes a PostgreSQL (I)LIKE pattern without escaping it; backslash is LIKE's default escape. */
const likeLiteral = (text: string) => text.replace(/[\\%_]/g, (char) => `\\${char}`);

export const customerTopic = (customerId: string) => `customer:${customerId}`;

export class CustomerService {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly pubsub: PubSub,
    private readonly changes = new ConfigChanges(),
  ) {}

  async create(merchantId: string, input: CreateCustomerInput): Promise<Customer> {
    const data = {
      merchantId,
      externalId: requireNonEmpty('externalId', input.externalId, MAX_EXTERNAL_ID_LENGTH),
      email: optionalEmail('email', input.email) ?? null,
      name: optionalText('name', input.name) ?? null,
      metadata: (input.metadata === undefined || input.metadata === null
        ? {}
        : requireJsonObject('metadata', input.metadata)) as Prisma.InputJsonObject,
    };
    try {
      const customer = await this.prisma.customer.create({ data });
      // The gateway may have just answered "not found" for this externalId, and keeps that a moment.
      this.changes.changed('new-customers', merchantId);
      return customer;
    } catch (error) {
      if (isUniqueViolation(error)) throw await this.duplicateExternalId(merchantId, data.externalId);
      throw error;
    }
  }

  async update(merchantId: string, id: string, input: UpdateCustomerInput): Promise<Customer> {
    const existing = await this.get(merchantId, id);
    const data: Prisma.CustomerUpdateInput = {};
    if (input.externalId !== undefined) {
      if (input.externalId === null) throw invalidField('externalId', 'cannot be removed');
      data.externalId = requireNonEmpty('externalId', input.externalId, MAX_EXTERNAL_ID_LENGTH);
    }
    if (input.email !== undefined) data.email = optionalEmail('email', input.email) ?? null;
    if (input.name !== undefined) data.name = optionalText('name', input.name) ?? null;
    if (input.metadata !== undefined) {
      data.metadata = (input.metadata === null ? {} : requireJsonObject('metadata', input.metadata)) as Prisma.InputJsonObject;
    }
    try {
      return this.published(await this.prisma.customer.update({ where: { id: existing.id }, data }));
    } catch (error) {
      if (isUniqueViolation(error) && typeof data.externalId === 'string') {
        throw await this.duplicateExternalId(merchantId, data.externalId);
      }
      throw error;
    }
  }

  /** Archived customers keep their history but cannot start sessions or new usage. Idempotent. */
  async archive(merchantId: string, id: string): Promise<Customer> {
    const existing = await this.get(merchantId, id);
    if (existing.archivedAt) return existing;
    // Under its wallets' locks, taken in the ledger's order (by id, see LedgerStore.withWallets): a
    // charge in flight commits first and any later one sees the archive; and dated no earlier than
    // the last change to those wallets, so no charge is dated after the archive that it preceded.
    const archived = await this.prisma.$transaction(async (tx) => {
      const [locked] = await tx.$queryRaw<{ at: Date }[]>`
        SELECT greatest(${new Date()}::timestamptz, max(w.updated_at)) AS at
        FROM (SELECT updated_at FROM wallets WHERE customer_id = ${existing.id}::uuid ORDER BY id FOR UPDATE) w`;
      // Only if still unarchived: a concurrent archive that committed first keeps its time (charges
      // were refused, and events judged, by it), and this call answers that one.
      await tx.customer.updateMany({ where: { id: existing.id, archivedAt: null }, data: { archivedAt: locked!.at } });
      return tx.customer.findUniqueOrThrow({ where: { id: existing.id } });
    });
    return this.published(archived);
  }

  /** A blocked customer keeps its data and wallet, but the gateway refuses its calls (403). */
  async block(merchantId: string, id: string, reason: string | null): Promise<Customer> {
    const text = optionalText('reason', reason, 500) ?? null;
    const existing = await this.get(merchantId, id);
    // Only if still unblocked, as archive does: a concurrent block that committed first keeps its
    // time (calls were refused from it on), and this call answers that one. Blocking a blocked
    // customer again changes its reason only.
    const blocked = await this.prisma.$transaction(async (tx) => {
      const { count } = await tx.customer.updateMany({ where: { id: existing.id, blockedAt: null }, data: { blockedAt: new Date(), blockedReason: text } });
      if (count === 0) await tx.customer.updateMany({ where: { id: existing.id, blockedAt: { not: null } }, data: { blockedReason: text } });
      return tx.customer.findUniqueOrThrow({ where: { id: existing.id } });
    });
    return this.published(blocked);
  }

  async unblock(merchantId: string, id: string): Promise<Customer> {
    const existing = await this.get(merchantId, id);
    if (!existing.blockedAt) return existing;
    return this.published(await this.prisma.customer.update({ where: { id: existing.id }, data: { blockedAt: null, blockedReason: null } }));
  }

  async unarchive(merchantId: string, id: string): Promise<Customer> {
    const existing = await this.get(merchantId, id);
    if (!existing.archivedAt) return existing;
    return this.published(await this.prisma.customer.update({ where: { id: existing.id }, data: { archivedAt: null } }));
  }

  async get(merchantId: string, id: string): Promise<Customer> {
    const customer = isUuid(id) ? await this.prisma.customer.findFirst({ where: { id: id.toLowerCase(), merchantId } }) : null;
    if (!customer) throw notFound('Customer', id);
    return customer;
  }

  /** Trimmed as create trims. Text no customer can have (see isStorableKey) is not looked up: the database would refuse or alter it. */
  async getByExternalId(merchantId: string, externalId: string): Promise<Customer> {
    const key = externalId.trim();
    const customer = isStorableKey(key) ? await this.prisma.customer.findUnique({ where: { merchantId_externalId: { merchantId, externalId: key } } }) : null;
    if (!customer) throw notFound('Customer with externalId', externalId);
    return customer;
  }

  /** The gateway's `x-tollgate-customer` accepts either id; Tollgate's own id wins a tie. */
  async getByIdOrExternalId(merchantId: string, idOrExternalId: string): Promise<Customer> {
    if (holdsUnstorableText(idOrExternalId)) throw notFound('Customer', idOrExternalId);
    const id = isUuid(idOrExternalId) ? idOrExternalId.toLowerCase() : null;
    const matches = await this.prisma.customer.findMany({
      where: { merchantId, OR: [...(id ? [{ id }] : []), { externalId: idOrExternalId }] },
      take: 2,
    });
    // Tollgate's id wins over another customer's externalId of the same text (as for usage and the gateway).
    const customer = matches.find((match) => match.id === id) ?? matches[0];
    if (!customer) throw notFound('Customer', idOrExternalId);
    return customer;
  }

  /** One page of customers, newest first; used through Relay's cursor connection. */
  async page(
    merchantId: string,
    filter: CustomerFilter | null | undefined,
    page: { before?: string; after?: string; limit: number; inverted: boolean },
  ): Promise<Customer[]> {
    const keyset = createdKeysetPage(page);
    return this.prisma.customer.findMany({
      where: { AND: [{ merchantId }, this.filterWhere(filter ?? {}), keyset.where] },
      orderBy: keyset.orderBy,
      take: page.limit,
    });
  }

  async count(merchantId: string, filter: CustomerFilter | null | undefined): Promise<number> {
    return this.prisma.customer.count({ where: { AND: [{ merchantId }, this.filterWhere(filter ?? {})] } });
  }

  private filterWhere(filter: CustomerFilter): Prisma.CustomerWhereInput {
    const where: Prisma.CustomerWhereInput[] = [];
    const status = filter.status ?? 'ACTIVE';
    if (status === 'ACTIVE') where.push({ archivedAt: null });
    if (status === 'ARCHIVED') where.push({ archivedAt: { not: null } });
    const search = optionalText('filter.search', filter.search, 200);
    if (search) {
      const contains = likeLiteral(search);
      where.push({
        OR: [
          { name: { contains, mode: 'insensitive' } },
          { email: { contains, mode: 'insensitive' } },
          { externalId: { contains, mode: 'insensitive' } },
        ],
      });
    }
    if (filter.email) {
      requireStorableText('filter.email', filter.email);
      where.push({ email: filter.email.trim().toLowerCase() });
    }
    if (filter.externalIds) {
      if (filter.externalIds.length > 100) throw invalidField('filter.externalIds', 'may list at most 100 ids');
      requireStorableText('filter.externalIds', filter.externalIds);
      // Trimmed as create and getByExternalId trim.
      where.push({ externalId: { in: filter.externalIds.map((externalId) => externalId.trim()) } });
    }
    if (filter.createdAfter) where.push({ createdAt: atOrAfter(filter.createdAfter) });
    if (filter.createdBefore) where.push({ createdAt: earlierThan(filter.createdBefore) });
    return { AND: where };
  }

  private async duplicateExternalId(merchantId: string, externalId: string) {
    const existing = await this.prisma.customer.findUnique({ where: { merchantId_externalId: { merchantId, externalId } } });
    return conflict(`A customer with externalId "${externalId}" already exists`, {
      field: 'externalId',
      existingCustomerId: existing?.id,
    });
  }

  private published(customer: Customer): Customer {
    this.pubsub.publish(customerTopic(customer.id), { customerId: customer.id });
    // The gateway keeps who may call (blocked, archived, which externalId) for a moment, on every instance.
    this.changes.changed('customers', customer.merchantId);
    return customer;
  }
}
