package schedule

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrInvalid marks bad input: a pattern, duration, time zone, time, name,
// type or header that cannot make a schedule. Nothing is stored.
var ErrInvalid = errors.New("invalid schedule")

// Header names of the server's message schedules (ADR-51).
const (
	HeaderSchedule       = "Nats-Schedule"
	HeaderTarget         = "Nats-Schedule-Target"
	HeaderTimeZone       = "Nats-Schedule-Time-Zone"
	HeaderNext           = "Nats-Schedule-Next"
	HeaderRollup         = "Nats-Rollup"
	rollupSubject        = "sub"
	patternAt            = "@at "
	patternEvery         = "@every "
	serverReservedPrefix = "Nats-"
)

// Spec says when a schedule fires: exactly one of At (a delayed task,
// once), Every (an interval of whole seconds, at least 1s) or Cron (a
// 6-field pattern, read in TimeZone, an IANA zone name; default UTC).
type Spec struct {
	At       time.Time
	Every    time.Duration
	Cron     string
	TimeZone string
}

// Validate reports why s cannot be stored (wrapping ErrInvalid), with now
// as the present for At.
func (s Spec) Validate(now time.Time) error {
	n := 0
	for _, set := range []bool{!s.At.IsZero(), s.Every != 0, s.Cron != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%w: give exactly one of a time, an interval or a cron pattern", ErrInvalid)
	}
	if s.TimeZone != "" && s.Cron == "" {
		return fmt.Errorf("%w: a time zone applies to cron patterns only", ErrInvalid)
	}
	switch {
	case !s.At.IsZero():
		if !s.At.After(now) {
			return fmt.Errorf("%w: %s is not in the future", ErrInvalid, s.At.UTC().Format(time.RFC3339))
		}
	case s.Every != 0:
		if s.Every < time.Second || s.Every%time.Second != 0 {
			return fmt.Errorf("%w: interval %s: want whole seconds, at least 1s", ErrInvalid, s.Every)
		}
	default:
		if _, err := s.cron(); err != nil {
			return err
		}
	}
	return nil
}

// loadZone loads an IANA zone; "Local" is refused, since it would mean the
// zone of whichever server fires the schedule.
func loadZone(tz string) (*time.Location, error) {
	if tz == "" {
		return time.UTC, nil
	}
	if tz == "Local" {
		return nil, fmt.Errorf("%w: time zone Local depends on the server's machine; name the zone (Europe/Berlin)", ErrInvalid)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("%w: unknown time zone %q", ErrInvalid, tz)
	}
	return loc, nil
}

func (s Spec) cron() (*Cron, error) {
	loc, err := loadZone(s.TimeZone)
	if err != nil {
		return nil, err
	}
	return ParseCron(s.Cron, loc)
}

// at is the time a delayed task fires: At, rounded up to a whole second
// (the pattern's resolution), so that it never runs before At.
func (s Spec) at() time.Time {
	t := s.At.UTC()
	if r := t.Truncate(time.Second); !r.Equal(t) {
		t = r.Add(time.Second)
	}
	return t
}

// Pattern is the Nats-Schedule header value of s: "@at <RFC 3339>",
// "@every <duration>" or the cron pattern.
func (s Spec) Pattern() string {
	switch {
	case !s.At.IsZero():
		return patternAt + s.at().Format(time.RFC3339)
	case s.Every != 0:
		return patternEvery + s.Every.String()
	}
	return s.Cron
}

// String is the pattern, with the time zone of a cron pattern.
func (s Spec) String() string {
	if s.TimeZone != "" {
		return s.Pattern() + " (" + s.TimeZone + ")"
	}
	return s.Pattern()
}

// ParseSpec reads the schedule headers of a stored schedule message.
func ParseSpec(h nats.Header) (Spec, error) {
	p := h.Get(HeaderSchedule)
	var s Spec
	switch {
	case strings.HasPrefix(p, patternAt):
		t, err := time.Parse(time.RFC3339, strings.TrimPrefix(p, patternAt))
		if err != nil {
			return s, fmt.Errorf("%w: %s %q: %w", ErrInvalid, HeaderSchedule, p, err)
		}
		s.At = t
	case strings.HasPrefix(p, patternEvery):
		d, err := time.ParseDuration(strings.TrimPrefix(p, patternEvery))
		if err != nil {
			return s, fmt.Errorf("%w: %s %q: %w", ErrInvalid, HeaderSchedule, p, err)
		}
		s.Every = d
	case p == "":
		return s, fmt.Errorf("%w: no %s header", ErrInvalid, HeaderSchedule)
	default:
		s.Cron, s.TimeZone = p, h.Get(HeaderTimeZone)
	}
	return s, nil
}

// Next is the next time after now that a schedule with spec s, stored at
// created, fires; false when it never fires again (a delayed task whose
// time passed). For a cron pattern it is exact. For an interval it is
// computed as the server schedules it (the stored time, rounded to the
// second, plus whole intervals); a server that was down across a firing
// restarts the interval from its own start, which this cannot see.
func (s Spec) Next(created, now time.Time) (time.Time, bool) {
	switch {
	case !s.At.IsZero():
		return s.at(), s.at().After(now)
	case s.Every > 0:
		base := created.UTC().Round(time.Second)
		first := base.Add(s.Every)
		if first.After(now) {
			return first, true
		}
		k := now.Sub(base)/s.Every + 1
		return base.Add(k * s.Every), true
	case s.Cron != "":
		c, err := s.cron()
		if err != nil {
			return time.Time{}, false
		}
		return c.Next(now)
	}
	return time.Time{}, false
}

// recent returns up to n of the latest times at or before now that s
// fired (or was due to), newest first, by the same reckoning as Next.
func (s Spec) recent(created, now time.Time, n int) []time.Time {
	var out []time.Time
	switch {
	case s.Every > 0:
		base := created.UTC().Round(time.Second)
		for k := now.Sub(base) / s.Every; k >= 1 && len(out) < n; k-- {
			out = append(out, base.Add(k*s.Every))
		}
	case s.Cron != "":
		c, err := s.cron()
		if err != nil {
			return nil
		}
		// Walk forward from far enough back to see n slots: a few of the
		// pattern's own gaps, bounded by the time the schedule exists.
		next, ok := c.Next(now)
		if !ok {
			return nil
		}
		after, ok := c.Next(next)
		if !ok {
			return nil
		}
		from := now.Add(-time.Duration(n+1) * after.Sub(next))
		if from.Before(created) {
			from = created
		}
		var slots []time.Time
		for t, ok := c.Next(from.Add(-time.Second)); ok && !t.After(now) && len(slots) < 1000; t, ok = c.Next(t) {
			slots = append(slots, t)
		}
		for i := len(slots) - 1; i >= 0 && len(out) < n; i-- {
			out = append(out, slots[i])
		}
	}
	return out
}
