package filelock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// fakeHost is a host's three clocks, for systemClock.
type fakeHost struct {
	wall       time.Time
	mono, boot time.Duration
	bootReads  int
}

func (h *fakeHost) clock() *systemClock {
	return &systemClock{
		bootID:   "boot",
		readBoot: func() time.Duration { h.bootReads++; return h.boot },
		readNow:  func() (time.Time, time.Duration) { return h.wall, h.mono },
	}
}

// run lets d pass on every clock.
func (h *fakeHost) run(d time.Duration) {
	h.wall = h.wall.Add(d)
	h.mono += d
	h.boot += d
}

func TestBootClockWithoutASystemCall(t *testing.T) {
	h := &fakeHost{wall: time.Unix(1e9, 0), mono: time.Second, boot: time.Hour}
	c := h.clock()
	_, b := c.Boot()
	assert.Equal(t, time.Hour, b)
	assert.Equal(t, 1, h.bootReads)

	h.run(10 * time.Millisecond)
	_, b = c.Boot()
	assert.Equal(t, time.Hour+10*time.Millisecond, b, "read off the monotonic clock")
	assert.Equal(t, 1, h.bootReads, "no system call within the resync period")

	h.run(bootResync)
	_, b = c.Boot()
	assert.Equal(t, time.Hour+10*time.Millisecond+bootResync, b)
	assert.Equal(t, 2, h.bootReads, "measured again once the period is over")
}

func TestBootClockAfterASuspend(t *testing.T) {
	// Suspended for a minute: the boot and wall clocks move on, the
	// monotonic clock does not. The next reading must include the minute.
	h := &fakeHost{wall: time.Unix(1e9, 0), mono: time.Second, boot: time.Hour}
	c := h.clock()
	c.Boot()
	h.wall = h.wall.Add(time.Minute)
	h.boot += time.Minute
	h.run(time.Millisecond)
	_, b := c.Boot()
	assert.Equal(t, time.Hour+time.Minute+time.Millisecond, b)
	assert.Equal(t, 2, h.bootReads)
}

func TestBootClockAfterAWallClockStep(t *testing.T) {
	// A step of the wall clock looks like a suspend: it costs a measure,
	// and the reading stays right.
	h := &fakeHost{wall: time.Unix(1e9, 0), mono: time.Second, boot: time.Hour}
	c := h.clock()
	c.Boot()
	h.wall = h.wall.Add(-time.Hour)
	h.run(time.Millisecond)
	_, b := c.Boot()
	assert.Equal(t, time.Hour+time.Millisecond, b)
	assert.Equal(t, 2, h.bootReads)
}
