package schedule_test

import (
	"errors"
	"testing"
	"time"

	"github.com/breakwater/breakwater/schedule"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Skipf("time zone %s not available here: %v", name, err)
	}
	return loc
}

func TestCronNext(t *testing.T) {
	tests := []struct {
		expr, zone string
		from, want string // RFC 3339
	}{
		{"*/15 * * * * *", "", "2026-12-01T10:00:07Z", "2026-12-01T10:00:15Z"},
		{"*/15 * * * * *", "", "2026-12-01T10:00:15Z", "2026-12-01T10:00:30Z"},               // strictly after
		{"0 30 9 * * *", "America/New_York", "2026-12-01T12:00:00Z", "2026-12-01T14:30:00Z"}, // EST
		{"0 30 9 * * *", "America/New_York", "2026-07-01T12:00:00Z", "2026-07-01T13:30:00Z"}, // EDT
		{"0 30 9 * * *", "Asia/Tokyo", "2026-12-01T12:00:00Z", "2026-12-02T00:30:00Z"},
		{"0 0 12 * * mon-fri", "", "2026-12-05T00:00:00Z", "2026-12-07T12:00:00Z"}, // Saturday to Monday
		{"0 0 0 13 * 5", "", "2026-12-01T00:00:00Z", "2026-12-04T00:00:00Z"},       // the 13th or a Friday
		{"0 0 0 13 * *", "", "2026-12-01T00:00:00Z", "2026-12-13T00:00:00Z"},
		{"0 0 0 1 jan *", "", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"@hourly", "", "2026-12-01T10:59:59Z", "2026-12-01T11:00:00Z"},
		{"5/20 0 0 * * ?", "", "2026-12-01T00:00:06Z", "2026-12-01T00:00:25Z"},
		{"0 0 0 29 2 *", "", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"},
		{"0,30 1-3 * * * *", "", "2026-12-01T00:59:00Z", "2026-12-01T01:01:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.expr+" "+tt.zone+" "+tt.from, func(t *testing.T) {
			loc := time.UTC
			if tt.zone != "" {
				loc = mustZone(t, tt.zone)
			}
			c, err := schedule.ParseCron(tt.expr, loc)
			if err != nil {
				t.Fatal(err)
			}
			from, _ := time.Parse(time.RFC3339, tt.from)
			want, _ := time.Parse(time.RFC3339, tt.want)
			got, ok := c.Next(from)
			if !ok || !got.Equal(want) {
				t.Errorf("Next(%s): got %s (%v), want %s", tt.from, got.UTC().Format(time.RFC3339), ok, tt.want)
			}
		})
	}
}

func TestCronInvalid(t *testing.T) {
	for _, expr := range []string{
		"* * * * *",       // 5 fields
		"* * * * * * *",   // 7
		"60 * * * * *",    // second out of range
		"* * 24 * * *",    // hour
		"* * * 0 * *",     // day of month from 1
		"* * * * 13 *",    // month
		"* * * * * 7",     // weekdays 0-6
		"a * * * * *",     // not a number
		"*/0 * * * * *",   // zero step
		"5-1 * * * * *",   // backwards
		"1-2-3 * * * * *", // two hyphens
		"*/2/3 * * * * *", // two slashes
		"0 0 0 31 feb *",  // never
		"",                // empty
		"@every-day",      // unknown shortcut
	} {
		if _, err := schedule.ParseCron(expr, nil); !errors.Is(err, schedule.ErrInvalid) {
			t.Errorf("ParseCron(%q): got %v, want ErrInvalid", expr, err)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		give schedule.Spec
		ok   bool
	}{
		{"every 1s", schedule.Spec{Every: time.Second}, true},
		{"every 1h", schedule.Spec{Every: time.Hour}, true},
		{"every 500ms", schedule.Spec{Every: 500 * time.Millisecond}, false},
		{"every 1.5s", schedule.Spec{Every: 1500 * time.Millisecond}, false},
		{"every -1s", schedule.Spec{Every: -time.Second}, false},
		{"cron", schedule.Spec{Cron: "0 0 9 * * *"}, true},
		{"cron with zone", schedule.Spec{Cron: "0 0 9 * * *", TimeZone: "Europe/Berlin"}, true},
		{"unknown zone", schedule.Spec{Cron: "0 0 9 * * *", TimeZone: "Mars/Olympus"}, false},
		{"Local zone", schedule.Spec{Cron: "0 0 9 * * *", TimeZone: "Local"}, false},
		{"zone without cron", schedule.Spec{Every: time.Minute, TimeZone: "Europe/Berlin"}, false},
		{"bad cron", schedule.Spec{Cron: "0 0 9 * *"}, false},
		{"at later", schedule.Spec{At: now.Add(time.Second)}, true},
		{"at now", schedule.Spec{At: now}, false},
		{"at past", schedule.Spec{At: now.Add(-time.Hour)}, false},
		{"nothing", schedule.Spec{}, false},
		{"two", schedule.Spec{Every: time.Minute, Cron: "0 0 9 * * *"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.give.Validate(now)
			if tt.ok && err != nil {
				t.Errorf("got %v, want valid", err)
			}
			if !tt.ok && !errors.Is(err, schedule.ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestSpecPatternAndNext(t *testing.T) {
	created := time.Date(2026, 12, 1, 10, 0, 0, 400_000_000, time.UTC) // rounds to 10:00:00
	tests := []struct {
		give      schedule.Spec
		pattern   string
		now, next time.Time
	}{
		{schedule.Spec{At: time.Date(2026, 12, 1, 11, 0, 0, 1, time.UTC)}, "@at 2026-12-01T11:00:01Z", created, time.Date(2026, 12, 1, 11, 0, 1, 0, time.UTC)},
		{schedule.Spec{Every: 10 * time.Second}, "@every 10s", created, created.Truncate(time.Second).Add(10 * time.Second)},
		{schedule.Spec{Every: 10 * time.Second}, "@every 10s", created.Add(25 * time.Second), created.Truncate(time.Second).Add(30 * time.Second)},
		{schedule.Spec{Every: 10 * time.Second}, "@every 10s", created.Truncate(time.Second).Add(30 * time.Second), created.Truncate(time.Second).Add(40 * time.Second)},
		{schedule.Spec{Cron: "0 0 * * * *"}, "0 0 * * * *", created, time.Date(2026, 12, 1, 11, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		if got := tt.give.Pattern(); got != tt.pattern {
			t.Errorf("Pattern: got %q, want %q", got, tt.pattern)
		}
		if got, ok := tt.give.Next(created, tt.now); !ok || !got.Equal(tt.next) {
			t.Errorf("%s Next at %s: got %s, want %s", tt.pattern, tt.now, got, tt.next)
		}
	}
}
