//go:build linux || darwin

package filelock

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The seen table keeps the two keys of a set seen last, so two keys that
// land in one set and come back in turn are both known.
func TestSeenTableKeepsTwoKeysPerSet(t *testing.T) {
	l := poolLocker(t, t.TempDir())
	inSet := func(n uint64) fileID {
		var id fileID
		id[0], id[1] = 7, 0 // one set for all
		for i := range 8 {
			id[8+i] = byte(n >> (8 * i))
		}
		return id
	}
	a, b, c := inSet(2), inSet(4), inSet(6)
	for range 3 {
		l.remember(a)
		l.remember(b)
		assert.True(t, l.known(a))
		assert.True(t, l.known(b))
	}
	l.remember(c)
	assert.True(t, l.known(c))
	assert.True(t, l.known(b), "the key seen before the last one stays")
	assert.False(t, l.known(a), "the oldest key of the set is pushed out")
	l.forget(b)
	assert.False(t, l.known(b))
	assert.True(t, l.known(c))

	// A hundred keys reused in turn, as the benchmarks use them, are all
	// known after one round.
	l = poolLocker(t, t.TempDir())
	for i := range 100 {
		id, _ := fileOf("job-" + strconv.Itoa(i))
		l.remember(id)
	}
	for i := range 100 {
		id, _ := fileOf("job-" + strconv.Itoa(i))
		assert.True(t, l.known(id), "job-%d", i)
	}
}
