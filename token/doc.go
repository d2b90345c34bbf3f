// Package token implements the gateway's access keys, the server secrets
// that sign them, and key revocation.
//
// # Access keys
//
// An access key is stateless: everything the gateway needs is in the key and
// an HMAC over it. Its binary layout, all integers big-endian:
//
//	offset  size  field
//	     0     1  format version (FormatVersion = 1)
//	     1     1  secret id: first byte of SHA-256 of the signing secret,
//	              so Verify finds the verifying secret without trying all
//	     2     8  key id (KeyID), random
//	    10     8  issued at, int64 unix milliseconds
//	    18     8  expires, int64 unix milliseconds
//	    26     1  subject length n, 1..MaxSubjectLen (64)
//	    27     n  subject, UTF-8 without control characters
//	  27+n    32  HMAC-SHA256 tag over bytes [0, 27+n), under the secret
//
// A key is therefore 60 (MinKeyLen) to 1+1+8+8+8+1+64+32 = 123 (MaxKeyLen)
// bytes long; it must stay at most 127 because the native protocol's key
// length byte is signed. The text form (EncodeText) is base64 with the URL
// alphabet and no padding; DecodeText also accepts the standard alphabet and
// padding, and trims surrounding white space.
//
// A key is valid while now < Expires. Issue refuses a TTL above MaxKeyTTL
// (366 days); a zero TTL means DefaultKeyTTL (30 days).
//
// # Secrets and rotation
//
// A Secrets value holds one or more secrets of at least 32 bytes. The first
// signs new keys; all of them verify. To rotate, put the new secret first and
// keep the old one after it (GATEWAY_SECRET="new,old" or one per line in the
// secret file) until the keys signed with the old one have expired or been
// reissued, then drop it. The secret id byte picks the candidate secrets;
// two secrets sharing an id byte (a 1 in 256 chance) are both tried.
// LoadSecrets chooses GATEWAY_SECRET, then a secret file, then a secret
// generated once into the data directory; ReadSecrets (for `gateway key
// issue`) does the same but never generates one. Both refuse a secret copied
// from the deployment examples (IsPlaceholder) as they refuse a short one.
//
// # Revocation
//
// A revocation (Revocation) is either
//
//   - by key id (KindID): that one key; the record expires with the key
//     (or MaxKeyTTL after it was made, if the key's expiry is unknown); or
//   - by subject at time T (KindSubject): every key of that subject issued
//     at or before T; keys issued after T stay valid. A later T only widens
//     the record, so stores and sets only ever raise T. The record expires
//     at T+MaxKeyTTL, when no key issued before T can still be valid.
//
// Revoked is the in-memory set consulted on every request (Check). A Store
// persists records: FileStore in an fsync'd append-only log for a single
// node, RedisStore in Redis for a cluster of nodes, announcing each record on
// a pub/sub channel. Revoker ties a store to a set: Revoker.Revoke writes to
// the store first, so an acknowledged revocation survives a crash, then
// updates the local set and calls the server's callback so that live
// sessions of revoked keys can be closed. Other nodes apply the record when
// its announcement arrives; as announcements sent while a node was
// disconnected from Redis are lost, the node reloads the whole set after
// every reconnect and reports every record to the callback again. The
// callback fires once per record that changes the set: a node's own
// announcement coming back to it changes nothing. Revocation is therefore
// immediate on the node that revoked and takes effect on the others within
// the pub/sub latency, or after a reconnect.
//
// Revocation fails closed. A Revoker over a shared store keeps the last set
// it saw in a snapshot file in the node's data dir (KeepSnapshot), written
// atomically and fsync'd after every change. A node whose Redis is
// unreachable at start starts from that snapshot; without one its set is
// unknown (Revoked.Known) and Check reports every key as revoked, so
// authentication is refused until the first load succeeds. A reload never
// shrinks the set: it takes the union of Redis and the set, and writes back
// to Redis the unexpired records Redis lacks. A data marker that the first
// node writes into Redis (RedisStore.Marker) tells a node that Redis came
// back without its data (a restart without persistence, a flush): checked
// at every reload and every MarkerCheckInterval, a loss makes the node log
// an error, reload (writing back what it knows) and call OnDataLost. Run Redis with persistence all the
// same: KOReader accounts and progress have no other copy.
//
// A started Revoker prunes expired records from its set every PruneInterval.
// FileStore drops expired records and compacts its log when opened.
//
// # Concurrency
//
// Every exported method of every type is safe for concurrent use. Secrets
// is immutable. Secrets.Verify and Revoked.Check are meant for event loops:
// they do no I/O and take no lock (Verify draws its HMAC state from a
// sync.Pool; Check reads a copy-on-write snapshot through an atomic
// pointer), and neither allocates apart from the subject string Verify
// returns. Revoked's writers (Add, Replace, Prune) copy the set and are
// O(n). Store and Revoker methods do I/O and must not be called on an event
// loop.
package token
