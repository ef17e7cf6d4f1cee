import type { PrismaClient, Merchant } from '../../generated/prisma/client.ts';
import { notFound } from '../../shared/errors.ts';
import { isUuid, requireNonEmpty } from '../../shared/validation.ts';
import type { ApiKeyMode, ApiKeyService, CreatedApiKey } from '../api-keys/api-keys.service.ts';

export class MerchantService {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly apiKeys: ApiKeyService,
  ) {}

  /**
   * A new tenant with its first secret key (shown once, in the result). One transaction: a
   * merchant whose key failed would be left with no way in, and a retry would make a second one.
   */
  async create(input: { name: string; keyMode?: ApiKeyMode }): Promise<{ merchant: Merchant; key: CreatedApiKey }> {
    requireNonEmpty('name', input.name);
    return this.prisma.$transaction((tx) => this.createWithin(tx as PrismaClient, input));
  }

  /** What `create` writes, over a transaction's client: for a merchant made with other rows (the demo seed). */
  async createWithin(tx: PrismaClient, input: { name: string; keyMode?: ApiKeyMode }): Promise<{ merchant: Merchant; key: CreatedApiKey }> {
    const merchant = await tx.merchant.create({ data: { name: requireNonEmpty('name', input.name) } });
    const key = await this.apiKeys.within(tx).create(merchant.id, { name: 'Default secret key', mode: input.keyMode ?? 'test' });
    return { merchant, key };
  }

  /** Text that is not a UUID names no merchant: it is not looked up (PostgreSQL would refuse it as a uuid). */
  async get(id: string): Promise<Merchant> {
    const merchant = isUuid(id) ? await this.prisma.merchant.findUnique({ where: { id: id.toLowerCase() } }) : null;
    if (!merchant) throw notFound('Merchant', id);
    return merchant;
  }

  /** Changes the given settings only. */
  async update(id: string, input: { name?: string | null; incompleteStreamPolicy?: 'ESTIMATE' | 'NO_CHARGE' | null }): Promise<Merchant> {
    return this.prisma.merchant.update({
      where: { id },
      data: {
        ...(input.name != null ? { name: requireNonEmpty('name', input.name) } : {}),
        ...(input.incompleteStreamPolicy != null ? { incompleteStreamPolicy: input.incompleteStreamPolicy } : {}),
      },
    });
  }

  async list(): Promise<Merchant[]> {
    return this.prisma.merchant.findMany({ orderBy: { createdAt: 'asc' } });
  }

  async count(): Promise<number> {
    return this.prisma.merchant.count();
  }
}
