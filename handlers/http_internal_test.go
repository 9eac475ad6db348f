package handlers

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		give string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"3600", time.Hour},
		{"86400", MaxRetryAfter},
		{"99999999999999999999999", MaxRetryAfter},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"Sun, 01 Mar 2026 12:00:30 GMT", 30 * time.Second},
		{"Sunday, 01-Mar-26 12:01:00 GMT", time.Minute}, // RFC 850
		{"Sun Mar  1 12:00:10 2026", 10 * time.Second},  // asctime
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0},            // past
		{"Mon, 02 Mar 2026 12:00:00 GMT", MaxRetryAfter},
	}
	for _, tc := range tests {
		if got := parseRetryAfter(tc.give, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q): got %v, want %v", tc.give, got, tc.want)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "7", "-1", "Sun, 01 Mar 2026 12:00:30 GMT", "1e9", "18446744073709551616"} {
		f.Add(s)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		if d := parseRetryAfter(s, now); d < 0 || d > MaxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %v, want in [0, %v]", s, d, MaxRetryAfter)
		}
	})
}

func TestReadBody(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		length  int64
		limit   int64
		wantErr error
	}{
		{"known length", "hello", 5, 10, nil},
		{"unknown length", "hello", -1, 10, nil},
		{"at limit", "hello", -1, 5, nil},
		{"declared over limit", "hello", 5, 4, errBodyTooLarge},
		{"streamed over limit", "hello", -1, 4, errBodyTooLarge},
		{"short body", "hel", 5, 10, io.ErrUnexpectedEOF},
		{"empty", "", 0, 10, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readBody(strings.NewReader(tc.give), tc.length, tc.limit)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got error %v, want %v", err, tc.wantErr)
			}
			if err == nil && !bytes.Equal(got, []byte(tc.give)) {
				t.Errorf("got %q, want %q", got, tc.give)
			}
		})
	}
}

func TestCleanText(t *testing.T) {
	tests := []struct {
		give []byte
		n    int
		want string
	}{
		{[]byte("  plain  "), 100, "plain"},
		{[]byte("line1\nline2\r\n"), 100, "line1 line2"},
		{[]byte("bell\x07\x00end"), 100, "bellend"},
		{[]byte("\xff\xfebad utf8"), 100, "bad utf8"},
		{[]byte("héllo"), 2, "h"}, // cut inside a rune
	}
	for _, tc := range tests {
		got := cleanText(tc.give, tc.n)
		if got != tc.want || !utf8.ValidString(got) {
			t.Errorf("cleanText(%q, %d): got %q, want %q", tc.give, tc.n, got, tc.want)
		}
	}
}
