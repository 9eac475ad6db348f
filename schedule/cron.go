package schedule

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cron is a parsed 6-field cron pattern, "SEC MIN HOUR DOM MON DOW", read
// the way nats-server's scheduler reads it (its own parser derives from
// robfig/cron): each field a comma list of *, ?, N, N-M, with an optional
// /STEP (N/STEP means N to the field's end); months and weekdays also by
// their English three-letter names; weekdays 0-6 from Sunday. When neither
// day field is * or ?, a day matches either of them; otherwise both.
// The shortcuts @yearly, @annually, @monthly, @weekly, @daily, @midnight
// and @hourly stand for their patterns.
type Cron struct {
	expr                            string
	sec, min, hour, dom, month, dow uint64
	loc                             *time.Location
}

// starBit marks a day field that was * or ?: the day rule depends on it.
const starBit = 1 << 63

type cronField struct {
	name   string
	lo, hi uint
	names  map[string]uint
}

var cronFields = [6]cronField{
	{name: "second", lo: 0, hi: 59},
	{name: "minute", lo: 0, hi: 59},
	{name: "hour", lo: 0, hi: 23},
	{name: "day of month", lo: 1, hi: 31},
	{name: "month", lo: 1, hi: 12, names: map[string]uint{
		"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
		"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}},
	{name: "day of week", lo: 0, hi: 6, names: map[string]uint{
		"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}},
}

var cronShortcuts = map[string]string{
	"@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
	"@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *",
	"@hourly": "0 0 * * * *",
}

// ParseCron parses expr in the time zone loc (nil: UTC). Errors wrap
// ErrInvalid and say which field is wrong.
func ParseCron(expr string, loc *time.Location) (*Cron, error) {
	if loc == nil {
		loc = time.UTC
	}
	pattern := expr
	if p, ok := cronShortcuts[strings.TrimSpace(expr)]; ok {
		pattern = p
	}
	fields := strings.Fields(pattern)
	if len(fields) != 6 {
		return nil, fmt.Errorf("%w: cron %q has %d fields, want 6: SEC MIN HOUR DOM MON DOW", ErrInvalid, expr, len(fields))
	}
	var bits [6]uint64
	for i, f := range fields {
		b, err := parseCronField(f, cronFields[i])
		if err != nil {
			return nil, fmt.Errorf("%w: cron %q: %s field %q: %w", ErrInvalid, expr, cronFields[i].name, f, err)
		}
		bits[i] = b
	}
	c := &Cron{expr: expr, sec: bits[0], min: bits[1], hour: bits[2], dom: bits[3], month: bits[4], dow: bits[5], loc: loc}
	// A pattern that never matches (30 February) is refused here, not
	// stored to never fire.
	if _, ok := c.Next(time.Now()); !ok {
		return nil, fmt.Errorf("%w: cron %q matches no time in the next five years", ErrInvalid, expr)
	}
	return c, nil
}

func parseCronField(field string, f cronField) (uint64, error) {
	var bits uint64
	for part := range strings.SplitSeq(field, ",") {
		b, err := parseCronRange(part, f)
		if err != nil {
			return 0, err
		}
		bits |= b
	}
	return bits, nil
}

func parseCronRange(expr string, f cronField) (uint64, error) {
	rng, stepText, hasStep := strings.Cut(expr, "/")
	if strings.Contains(stepText, "/") {
		return 0, errors.New("more than one /")
	}
	var lo, hi uint
	var extra uint64
	if rng == "*" || rng == "?" {
		lo, hi, extra = f.lo, f.hi, starBit
	} else {
		a, b, isRange := strings.Cut(rng, "-")
		if strings.Contains(b, "-") {
			return 0, errors.New("more than one -")
		}
		var err error
		if lo, err = cronValue(a, f); err != nil {
			return 0, err
		}
		hi = lo
		if isRange {
			if hi, err = cronValue(b, f); err != nil {
				return 0, err
			}
		} else if hasStep {
			hi = f.hi // N/STEP: from N to the end
		}
	}
	step := uint(1)
	if hasStep {
		n, err := strconv.Atoi(stepText)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("step %q is not a positive number", stepText)
		}
		step = uint(n)
		if step > 1 {
			extra = 0
		}
	}
	switch {
	case lo < f.lo:
		return 0, fmt.Errorf("%d is below %d", lo, f.lo)
	case hi > f.hi:
		return 0, fmt.Errorf("%d is above %d", hi, f.hi)
	case lo > hi:
		return 0, fmt.Errorf("range %d-%d is backwards", lo, hi)
	}
	var bits uint64
	for v := lo; v <= hi; v += step {
		bits |= 1 << v
	}
	return bits | extra, nil
}

func cronValue(s string, f cronField) (uint, error) {
	if v, ok := f.names[strings.ToLower(s)]; ok {
		return v, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a number from %d to %d", s, f.lo, f.hi)
	}
	return uint(n), nil
}

// String is the pattern as given.
func (c *Cron) String() string { return c.expr }

// Location is the time zone the pattern is read in.
func (c *Cron) Location() *time.Location { return c.loc }

// Next is the first time after t (at a whole second, in the pattern's
// zone) that the pattern matches, as the server computes it; false when
// none comes within five years.
func (c *Cron) Next(t time.Time) (time.Time, bool) {
	t = t.In(c.loc).Truncate(time.Second).Add(time.Second)
	limit := t.Year() + 5
	// Each field is advanced until it matches, resetting the smaller
	// ones; a field that wraps around starts over from the largest.
	reset := false
wrap:
	if t.Year() > limit {
		return time.Time{}, false
	}
	for 1<<uint(t.Month())&c.month == 0 {
		if !reset {
			reset = true
			t = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, c.loc)
		}
		if t = t.AddDate(0, 1, 0); t.Month() == time.January {
			goto wrap
		}
	}
	for !c.dayMatches(t) {
		if !reset {
			reset = true
			t = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, c.loc)
		}
		if t = t.AddDate(0, 0, 1); t.Day() == 1 {
			goto wrap
		}
	}
	for 1<<uint(t.Hour())&c.hour == 0 {
		if !reset {
			reset = true
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), 0, 0, 0, c.loc)
		}
		if t = t.Add(time.Hour); t.Hour() == 0 {
			goto wrap
		}
	}
	for 1<<uint(t.Minute())&c.min == 0 {
		if !reset {
			reset = true
			t = t.Truncate(time.Minute)
		}
		if t = t.Add(time.Minute); t.Minute() == 0 {
			goto wrap
		}
	}
	for 1<<uint(t.Second())&c.sec == 0 {
		if !reset {
			reset = true
			t = t.Truncate(time.Second)
		}
		if t = t.Add(time.Second); t.Second() == 0 {
			goto wrap
		}
	}
	return t, true
}

func (c *Cron) dayMatches(t time.Time) bool {
	domOK := 1<<uint(t.Day())&c.dom != 0
	dowOK := 1<<uint(t.Weekday())&c.dow != 0
	if c.dom&starBit != 0 || c.dow&starBit != 0 {
		return domOK && dowOK
	}
	return domOK || dowOK
}
