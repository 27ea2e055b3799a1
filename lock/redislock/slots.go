package redislock

import (
	"context"
	"crypto/rand"
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/redis/go-redis/v9"
)

// A key used with a limit over one (lock.Limiter) keeps its slots in a
// sorted set of owner tokens scored by their expiry on the server's clock,
// <prefix>{K}:slots, and their values in a hash, <prefix>{K}:holders, next
// to the key's fencing counter: one hash slot, one script per operation.
// Slot owner tokens start with slotTokenPrefix, which is how Refresh and
// Release tell them from locks.

var (
	//go:embed obtainslot.lua
	obtainSlotSrc string
	//go:embed refreshslot.lua
	refreshSlotSrc string
	//go:embed releaseslot.lua
	releaseSlotSrc string
	//go:embed inspectslots.lua
	inspectSlotsSrc string

	obtainSlotScript   = redis.NewScript(obtainSlotSrc)
	refreshSlotScript  = redis.NewScript(refreshSlotSrc)
	releaseSlotScript  = redis.NewScript(releaseSlotSrc)
	inspectSlotsScript = redis.NewScript(inspectSlotsSrc)
)

const (
	slotTokenPrefix = "slot_"
)

var _ lock.Limiter = (*Locker)(nil)

func isSlotToken(token string) bool { return strings.HasPrefix(token, slotTokenPrefix) }

// slotKeys returns the slots, holders, counter and lock keys of key, in
// the order the slot scripts take them.
func (l *Locker) slotKeys(key string) []string {
	k := l.keys(key)
	return []string{k[2], k[3], k[1], k[0]}
}

// ObtainLimit implements lock.Limiter in one round trip; a limit of 1 is
// Obtain. It returns an error naming both limits when the key's live slots
// were taken with another limit.
func (l *Locker) ObtainLimit(ctx context.Context, key string, limit int, ttl time.Duration) (lock.Lease, error) {
	if limit == 1 {
		return l.Obtain(ctx, key, ttl)
	}
	if err := lock.ValidateObtainLimit(key, limit, ttl); err != nil {
		return lock.Lease{}, err
	}
	start := time.Now()
	token := slotTokenPrefix + rand.Text()
	meta := strconv.FormatInt(start.UnixMilli(), 10) + l.meta
	res, err := l.obtainRun(ctx, l.obtainSlot, key, l.slotKeys(key), token, meta, l.ttlArg(ttl), l.retArg, limit)
	if err != nil {
		return lock.Lease{}, l.obtainError(key, err)
	}
	if r, ok := res.(int64); ok {
		return lock.Lease{Key: key, Token: token, Fence: uint64(r), ExpiresAt: start.Add(ttl)}, nil
	}
	return lock.Lease{}, l.refusal(key, res)
}

// releaseSlot is Release for a slot lease.
func (l *Locker) releaseSlot(ctx context.Context, lease lock.Lease) error {
	n, err := l.run(ctx, releaseSlotScript, l.slotKeys(lease.Key)[:2], lease.Token).Int64()
	if err != nil {
		return wrap("release", lease.Key, err)
	}
	if n == 0 {
		return lock.ErrNotHeld
	}
	return nil
}

// InspectSlots implements lock.Limiter in one round trip. Redis forgets
// expired and released slots, so every record is held.
func (l *Locker) InspectSlots(ctx context.Context, key string) ([]lock.Record, error) {
	if err := lock.ValidateKey(key); err != nil {
		return nil, err
	}
	res, err := l.run(ctx, inspectSlotsScript, l.slotKeys(key)[:2]).Slice()
	if err != nil {
		return nil, wrap("inspect", key, err)
	}
	return slotRecords(key, res), nil
}

// slotRecords reads inspectslots.lua's reply: the limit, then a value and
// the milliseconds left per slot.
func slotRecords(key string, res []any) []lock.Record {
	if len(res) == 0 {
		return nil
	}
	limit, _ := strconv.Atoi(fmt.Sprint(res[0]))
	var out []lock.Record
	for i := 1; i+1 < len(res); i += 2 {
		v, _ := res[i].(string)
		left, _ := res[i+1].(int64)
		r := record(key, v, left)
		r.Limit = limit
		out = append(out, r)
	}
	return out
}
