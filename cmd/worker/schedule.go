package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/joblock/joblock/scheduler"
)

// Names of the worker's cron jobs.
const (
	jobDailyCleanup = "daily-cleanup"
	jobLockCleanup  = "lock-cleanup"
	jobCacheWarmup  = "cache-warmup"
)

// scheduleOff disables a job.
const scheduleOff = "off"

// schedules maps each cron job to its cron spec, or to scheduleOff.
type schedules map[string]string

// defaultSchedules are the schedules the worker runs unless configured
// otherwise.
func defaultSchedules() schedules {
	return schedules{jobDailyCleanup: "@daily", jobLockCleanup: "@every 5m", jobCacheWarmup: "@every 1m"}
}

// jobNames returns the configurable jobs, sorted.
func (s schedules) jobNames() []string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// scheduleFlag collects -schedule NAME=SPEC flags over the defaults and
// JOBLOCK_SCHEDULES.
type scheduleFlag struct{ s schedules }

func (f scheduleFlag) String() string {
	if f.s == nil {
		return ""
	}
	parts := make([]string, 0, len(f.s))
	for _, n := range f.s.jobNames() {
		parts = append(parts, n+"="+f.s[n])
	}
	return strings.Join(parts, "; ")
}

// Set takes one or more NAME=SPEC entries separated by ';'.
func (f scheduleFlag) Set(v string) error { return f.s.set(v) }

// set applies entries "NAME=SPEC; NAME=SPEC": SPEC is a five-field cron
// spec or a descriptor (@daily, @every 10m), optionally led by
// CRON_TZ=Zone/Name, or "off". Each spec is parsed here, as the scheduler
// will (scheduler.ParseStandard: a zone with no schedule after it, or a
// schedule that never fires, is an error), so a bad one is reported
// before the worker connects to anything. An @every interval must
// be whole seconds, at least one: robfig/cron would silently run a shorter
// one (0s, -1m, 1ms) every second and cut 1.5s to 1s.
func (s schedules) set(v string) error {
	for _, entry := range strings.Split(v, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, spec, ok := strings.Cut(entry, "=")
		name, spec = strings.TrimSpace(name), strings.TrimSpace(spec)
		if _, known := s[name]; !ok || !known {
			return fmt.Errorf("schedule %q: want NAME=SPEC with NAME one of %s", entry, strings.Join(s.jobNames(), ", "))
		}
		if spec != scheduleOff {
			if _, err := scheduler.ParseStandard(spec); err != nil {
				return fmt.Errorf("schedule of %s: %q: %w", name, spec, err)
			}
			if d, ok := every(spec); ok && (d < time.Second || d%time.Second != 0) {
				return fmt.Errorf("schedule of %s: %q: the interval must be whole seconds, at least 1s", name, spec)
			}
		}
		s[name] = spec
	}
	return nil
}

// every returns the interval of an "@every D" spec, after any CRON_TZ=
// or TZ= zone.
func every(spec string) (time.Duration, bool) {
	if strings.HasPrefix(spec, "CRON_TZ=") || strings.HasPrefix(spec, "TZ=") {
		_, spec, _ = strings.Cut(spec, " ")
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(spec), "@every ")
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(strings.TrimSpace(v))
	return d, err == nil
}
