package scheduler

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// standard parses what a Scheduler without WithSeconds takes.
var standard = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseStandard parses spec as a Scheduler without WithSeconds reads a
// Job's Spec: five fields or a descriptor ("@daily", "@every 10m"),
// optionally led by CRON_TZ=Zone/Name. It does not block. Unlike
// cron.ParseStandard it never panics, and it returns an error for what
// robfig/cron would take but never run as written: a CRON_TZ= zone with no
// schedule after it (on which robfig/cron's parser panics), an empty zone
// (which it reads as UTC) and a schedule with no activation in the next
// five years (30 February).
func ParseStandard(spec string) (cron.Schedule, error) { return parse(standard, spec) }

// parse is ParseStandard with the parser p.
func parse(p cron.Parser, spec string) (cron.Schedule, error) {
	for _, prefix := range []string{"CRON_TZ=", "TZ="} {
		rest, ok := strings.CutPrefix(spec, prefix)
		if !ok {
			continue
		}
		zone, sched, _ := strings.Cut(rest, " ")
		switch {
		case zone == "":
			return nil, fmt.Errorf("%s names no time zone: want %sZone/Name, such as %sEurope/Berlin, before the schedule", prefix, prefix, prefix)
		case strings.TrimSpace(sched) == "":
			return nil, fmt.Errorf("no schedule after %s%s: want the zone, a space, then five fields or a descriptor", prefix, zone)
		}
	}
	sched, err := p.Parse(spec)
	if err != nil {
		return nil, err
	}
	if sched.Next(time.Now()).IsZero() {
		return nil, errors.New("it never fires: no activation in the next five years")
	}
	return sched, nil
}
