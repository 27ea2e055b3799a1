//go:build linux || darwin

package filelock

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLargestSlotsFileFits(t *testing.T) {
	// lock.MaxLimit slots of the largest record this engine writes: the
	// longest key made of the characters JSON escapes longest, the longest
	// host name, the largest numbers. It must fit maxSlotsSize, or a legal
	// key would read as corrupt.
	key := strings.Repeat("<", lock.MaxKeyLen) // \u003c: six bytes each
	host := strings.Repeat("\u2028", 64/3)     // \u2028: six bytes for three
	now := instant{wall: time.UnixMilli(maxUnixMs - int64(lock.MaxTTL/time.Millisecond)), bootID: strings.Repeat("f", 36) + "/boottime-9223372036.999999999", boot: math.MaxInt64 - lock.MaxTTL}
	s := slots{Key: key, Limit: lock.MaxLimit, Fence: maxFence}
	for range lock.MaxLimit {
		r := record{LockID: slotTokenPrefix + strings.Repeat("Z", 26), Key: key, AcquiredAt: now.wall.Unix(), AcquiredAtMs: now.wall.UnixMilli(),
			PID: math.MaxInt32, Host: host, Fence: maxFence, State: stateReleased}
		r.setExpiry(now, lock.MaxTTL)
		s.Slots = append(s.Slots, r)
	}
	b, err := s.encode()
	require.NoError(t, err)
	t.Logf("largest slots file: %d bytes", len(b))
	assert.Less(t, len(b)+1, maxSlotsSize)
	var back slots
	require.True(t, back.parse(b))
	assert.Equal(t, key, back.Slots[lock.MaxLimit-1].Key)
}
