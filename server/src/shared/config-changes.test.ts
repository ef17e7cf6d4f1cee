import { describe, expect, it } from 'vitest';
import { ConfigChanges } from './config-changes.ts';
import { InMemoryPubSub } from './pubsub.ts';

/** Waits for the subscribers' async iterators to take what was published. */
const delivered = () => new Promise((resolve) => setTimeout(resolve, 10));

describe('ConfigChanges', () => {
  it('drops a change here at once and on every other instance sharing the PubSub, each once', async () => {
    const pubsub = new InMemoryPubSub();
    const here = new ConfigChanges(pubsub);
    const there = new ConfigChanges(pubsub);
    const dropped: string[] = [];
    here.on('price-rules', (merchantId) => dropped.push(`here:${merchantId}`));
    there.on('price-rules', (merchantId) => dropped.push(`there:${merchantId}`));
    there.on('meters', (merchantId) => dropped.push(`there meters:${merchantId}`));

    here.changed('price-rules', 'm1');
    expect(dropped).toEqual(['here:m1']);
    await delivered();
    expect(dropped).toEqual(['here:m1', 'there:m1']);
    here.stop();
    there.stop();
  });

  it('ignores messages it cannot read, and without a PubSub drops in this process only', async () => {
    const pubsub = new InMemoryPubSub();
    const listening = new ConfigChanges(pubsub);
    const dropped: string[] = [];
    listening.on('meters', (merchantId) => dropped.push(merchantId));
    pubsub.publish('tollgate:config-changes', { scope: 'nothing-cached', merchantId: 'm1' });
    pubsub.publish('tollgate:config-changes', { scope: 'meters', merchantId: 42 });
    pubsub.publish('tollgate:config-changes', { scope: 'meters', merchantId: 'm2' });
    await delivered();
    expect(dropped).toEqual(['m2']);

    const alone = new ConfigChanges();
    alone.on('meters', (merchantId) => dropped.push(`alone:${merchantId}`));
    alone.changed('meters', 'm3');
    await delivered();
    expect(dropped).toEqual(['m2', 'alone:m3']);
    listening.stop();
  });
});
