package filelock

import "time"

// Clock tells the engine the time. The engine judges a record written
// under the same Boot identifier by Boot, which wall-clock steps do not
// move, and any other record by Now.
type Clock interface {
	// Now returns the wall-clock time.
	Now() time.Time
	// Boot returns an identifier of the boot clock this process reads and
	// the time elapsed on it since boot, counting suspended time. Readings
	// are compared only under equal identifiers, so the identifier must
	// change with anything that shifts the clock: the boot, and on Linux
	// the time namespace. An empty id means there is no such clock and Now
	// alone is used.
	Boot() (id string, elapsed time.Duration)
}

// instant is one reading of a Clock.
type instant struct {
	wall   time.Time
	bootID string
	boot   time.Duration
}

func readClock(c Clock) instant {
	id, d := c.Boot()
	return instant{wall: c.Now(), bootID: id, boot: d}
}

// systemClock reads the host's clocks.
type systemClock struct{ bootID string }

func (systemClock) Now() time.Time { return time.Now() }

func (c systemClock) Boot() (string, time.Duration) {
	if c.bootID == "" {
		return "", 0
	}
	return c.bootID, bootElapsed()
}
