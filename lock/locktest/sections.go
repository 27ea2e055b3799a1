package locktest

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// SectionLog records critical sections in a file shared by several
// processes, for CheckHammerLog. Each record is one write to a file opened
// with O_APPEND, so lines land whole and in the order they were written.
type SectionLog struct {
	f   *os.File
	pid string
}

// OpenSectionLog opens (creating) the shared log at path for appending.
func OpenSectionLog(path string) (*SectionLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &SectionLog{f: f, pid: strconv.Itoa(os.Getpid())}, nil
}

// Close closes the log.
func (s *SectionLog) Close() error { return s.f.Close() }

// Line appends one line, "format... pid".
func (s *SectionLog) Line(format string, args ...any) error {
	_, err := s.f.WriteString(fmt.Sprintf(format, args...) + " " + s.pid + "\n")
	return err
}

// Enter records that the holder of fence entered its critical section.
func (s *SectionLog) Enter(fence uint64) error { return s.Line("enter %d", fence) }

// Exit records that the holder of fence left its critical section, then
// whether its lease still ran when it left. deadline must be no later than
// the lease's real expiry. The clock is read only after the exit line is
// written: a writer descheduled between the two is judged late (its
// section is not checked), never the other way round, so the checker
// cannot report an overlap that the lock did not allow.
func (s *SectionLog) Exit(fence uint64, deadline time.Time) error {
	if err := s.Line("exit %d", fence); err != nil {
		return err
	}
	return s.Line("held %d %t", fence, time.Now().Before(deadline))
}

// Releasing records that the holder of fence is about to release it, and
// Released what the release returned.
func (s *SectionLog) Releasing(fence uint64) error { return s.Line("releasing %d", fence) }

// Released records the outcome of a release that Releasing announced.
func (s *SectionLog) Released(fence uint64, ok bool) error {
	return s.Line("released %d %t", fence, ok)
}
