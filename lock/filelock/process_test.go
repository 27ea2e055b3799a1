package filelock_test

import (
	"testing"
	"time"

	"github.com/joblock/joblock/lock/locktest"
	"github.com/stretchr/testify/assert"
)

func TestCrossProcessHammer(t *testing.T) {
	dir := t.TempDir()
	s := locktest.RunHammer(t, 4, 60*time.Millisecond, 3*time.Second, envDir+"="+dir)
	t.Logf("%+v", s)
	assert.Greater(t, s.Sections, 60, "too few critical sections to prove anything")
	assert.Positive(t, s.Abandoned, "no holder abandoned its lock")
	assert.Positive(t, s.LateRejected, "no late release was refused")
}

func TestKilledHolderFreesAfterTTL(t *testing.T) {
	dir := t.TempDir()
	locktest.RunKilledHolder(t, newLocker(t, dir), time.Second, envDir+"="+dir)
}

func TestCrossProcessHammerLimitThree(t *testing.T) {
	dir := t.TempDir()
	s := locktest.RunHammerLimit(t, 8, 3, 60*time.Millisecond, 3*time.Second, envDir+"="+dir)
	t.Logf("%+v", s)
	assert.Greater(t, s.Sections, 60, "too few critical sections to prove anything")
}

func TestKilledSlotHolderFreesAfterTTL(t *testing.T) {
	dir := t.TempDir()
	locktest.RunKilledSlotHolder(t, newLocker(t, dir), 3, time.Second, envDir+"="+dir)
}
