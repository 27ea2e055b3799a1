package locktest

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	ChildMain(func() (lock.Locker, error) { return nil, errors.New("this package's children run without an engine") })
	os.Exit(m.Run())
}

func TestCheckHammerLog(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		wantErr string
	}{
		{"clean", `enter 1 10
exit 1 10
held 1 true 10
releasing 1 10
released 1 true 10
enter 2 11
exit 2 11
held 2 true 11
enter 3 10
exit 3 10
held 3 true 10
releasing 2 11
released 2 false 11`, ""},
		{"overlap", `enter 1 10
enter 2 11
exit 1 10
held 1 true 10
exit 2 11
held 2 true 11`, "2 entering at line"},
		{"late holder may overlap", `enter 1 10
enter 2 11
exit 1 10
held 1 false 10
exit 2 11
held 2 true 11`, ""},
		// The writer of section 1 was descheduled after its exit and only
		// then read the clock: its lease had run out, so section 2 may have
		// entered before the exit line was written.
		{"descheduled writer judged late", `enter 1 10
enter 2 11
exit 1 10
exit 2 11
held 2 true 11
held 1 false 10`, ""},
		{"descheduled writer whose lease still ran", `enter 1 10
enter 2 11
exit 1 10
exit 2 11
held 2 true 11
held 1 true 10`, "2 entering at line"},
		// The writer of section 1 took the lock first, then was descheduled
		// before its enter line for longer than its TTL; section 2 took
		// the expired lock over and logged its entry first. Only the late
		// section's own lines are out of place: no violation.
		{"descheduled before its enter line", `enter 2 10
enter 1 11
exit 2 10
held 2 true 10
exit 1 11
held 1 false 11`, ""},
		{"descheduled before its enter line, then a release", `enter 2 10
enter 1 11
exit 2 10
held 2 true 10
releasing 2 10
released 2 true 10
exit 1 11
held 1 false 11
releasing 1 11
released 1 false 11`, ""},
		{"died inside: not checked", `enter 1 10
enter 2 11
exit 2 11
held 2 true 11`, ""},
		{"fence backwards", `enter 5 10
exit 5 10
held 5 true 10
enter 4 11
exit 4 11
held 4 true 11`, "fencing token 4 after 5"},
		{"fence reused", `enter 5 10
exit 5 10
held 5 true 10
enter 5 11
exit 5 11
held 5 true 11`, "handed out twice"},
		{"stolen release", `enter 1 10
exit 1 10
held 1 true 10
enter 2 11
releasing 1 10
released 1 true 10
exit 2 11
held 2 true 11`, "release of 1 succeeded after 2"},
		{"held before exit counts as late", `enter 1 10
held 1 true 10
enter 2 11
exit 1 10`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CheckHammerLog(tt.give)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
	s, err := CheckHammerLog(tests[0].give)
	require.NoError(t, err)
	assert.Equal(t, HammerSummary{Sections: 3, Abandoned: 1, LateRejected: 1, Processes: 2, MaxFence: 3, MaxInside: 1}, s)
}

func TestSectionLogExitReadsTheClockAfterWriting(t *testing.T) {
	path := t.TempDir() + "/log"
	log, err := OpenSectionLog(path)
	require.NoError(t, err)
	require.NoError(t, log.Enter(1))
	require.NoError(t, log.Exit(1, time.Now().Add(time.Hour)))
	require.NoError(t, log.Enter(2))
	require.NoError(t, log.Exit(2, time.Now().Add(-time.Millisecond)))
	require.NoError(t, log.Close())
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	s, err := CheckHammerLog(string(raw))
	require.NoError(t, err)
	assert.Equal(t, 2, s.Sections)
	assert.Equal(t, 1, s.Late, "a section that exited after its deadline is late")
}

// TestHammerWithoutLockingReportsOverlaps shows the checker sees what a
// broken engine does: four processes that never exclude each other.
func TestHammerWithoutLockingReportsOverlaps(t *testing.T) {
	_, err := CheckHammerLog(runHammer(t, "hammer-unlocked", 4, 60*time.Millisecond, time.Second))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "held section(s)")
}

func TestCheckHammerLogLimit(t *testing.T) {
	// Three holders of a key that admits two: the third entered while the
	// first two were inside.
	three := `enter 1 10
enter 2 11
enter 3 12
exit 1 10
held 1 true 10
exit 2 11
held 2 true 11
exit 3 12
held 3 true 12`
	_, err := CheckHammerLogLimit(three, 2)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "3 entering at line 2 while 2 held section(s) [1 2] were inside (the key admits 2)")

	s, err := CheckHammerLogLimit(three, 3)
	require.NoError(t, err)
	assert.Equal(t, 3, s.MaxInside)

	// Two at a time, the third entering once the first left; entries of
	// concurrent holders need not come in token order.
	two := `enter 2 11
enter 1 10
exit 2 11
held 2 true 11
enter 3 12
exit 1 10
held 1 true 10
exit 3 12
held 3 true 12`
	s, err = CheckHammerLogLimit(two, 2)
	require.NoError(t, err)
	assert.Equal(t, HammerSummary{Sections: 3, Abandoned: 3, Processes: 3, MaxFence: 3, MaxInside: 2}, s)
	_, err = CheckHammerLog(two)
	require.Error(t, err, "the same log breaks a key that admits one")

	// A holder whose lease ran out does not count against the limit.
	late := `enter 1 10
enter 2 11
enter 3 12
exit 1 10
held 1 false 10
exit 2 11
held 2 true 11
exit 3 12
held 3 true 12`
	_, err = CheckHammerLogLimit(late, 2)
	require.NoError(t, err)

	// Nor does one entering late: it may have taken its slot before the
	// two inside took theirs, and been descheduled before its enter line.
	lateEntry := `enter 2 11
enter 3 12
enter 1 10
exit 2 11
held 2 true 11
exit 3 12
held 3 true 12
exit 1 10
held 1 false 10`
	_, err = CheckHammerLogLimit(lateEntry, 2)
	require.NoError(t, err)
}

// TestHammerWithoutLockingReportsExcess is the same for a limit: four
// processes that never wait exceed a key that admits two.
func TestHammerWithoutLockingReportsExcess(t *testing.T) {
	_, err := CheckHammerLogLimit(runHammer(t, "hammer-unlocked", 4, 60*time.Millisecond, time.Second), 2)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "(the key admits 2)")
}
