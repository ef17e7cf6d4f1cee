import { crc32 } from 'node:zlib';

/**
 * One AWS event-stream message, as Bedrock's streaming APIs send them: prelude (total and header
 * lengths, their CRC), string headers, the JSON payload, and the message's CRC.
 */
export function eventStreamFrame(type: string, payload: object): Buffer {
  const header = (name: string, value: string) => Buffer.concat([Buffer.from([name.length]), Buffer.from(name), Buffer.from([7]), Buffer.from([value.length >> 8, value.length & 255]), Buffer.from(value)]);
  const headers = Buffer.concat([header(':event-type', type), header(':content-type', 'application/json'), header(':message-type', 'event')]);
  const body = Buffer.from(JSON.stringify(payload));
  const prelude = Buffer.alloc(12);
  prelude.writeUInt32BE(12 + headers.length + body.length + 4, 0);
  prelude.writeUInt32BE(headers.length, 4);
  prelude.writeUInt32BE(crc32(prelude.subarray(0, 8)), 8);
  const message = Buffer.concat([prelude, headers, body]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(message), 0);
  return Buffer.concat([message, crc]);
}
