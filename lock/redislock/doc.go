// Package redislock is joblock's engine for many hosts: locks in Redis
// through go-redis v9, on a single node, Sentinel (a failover client) or
// Cluster.
//
// # Keys
//
// The lock on key K is the string <prefix>{K} and its fencing counter is
// <prefix>{K}:fence. The braces are a Cluster hash tag, so both live in one
// hash slot and every operation is one Lua script, one round trip. A key
// that starts with "}" would make the tag empty, and Cluster would hash
// each name whole into different slots: such a key is stored as
// <prefix>{\x00K}, whose tag is "\x00" for the lock and its counter.
//
// The lock's value is "<owner token> <acquired unix ms> <pid> <host>
// <fencing token>" with a PX expiry; Redis itself removes expired locks, and
// Release deletes the lock, so Cleanup has nothing to do.
//
// # Fencing tokens
//
// Each successful Obtain hands out the larger of the key's counter plus one
// and the Redis server's clock in microseconds, and stores it as the new
// counter. Tokens therefore stay strictly increasing across everything
// that makes Redis forget the counter: its expiry (a key idle for the
// retention period, WithFenceRetention, default 24h, so counters of keys
// used once do not pile up), a restart from an older snapshot or AOF, or a
// failover to a replica that had not received the latest increments. The
// one condition is that the server clock does not go back: after a
// failover, the new primary's clock must not be behind the old one's by
// more than the time the failover took. The price: tokens are large
// numbers.
//
// # What a restart or failover can do to a lock
//
// Redis replication is asynchronous, and a server without persistence
// restarts empty. Either way a live lock can vanish, and a second holder
// can then obtain the same key while the first still works under it. The
// first holder learns of it at its next renewal (the lock is gone, its
// work's context is cancelled with lock.ErrLost): renewals come every third
// of the lease, so that is the longest the two can overlap. Resources that
// must never accept both should check the fencing token, which the second
// holder's is always above.
package redislock
