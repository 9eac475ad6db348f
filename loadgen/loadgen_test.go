package loadgen_test

import (
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/loadgen"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	tests := []struct {
		give []time.Duration
		p    float64
		want time.Duration
	}{
		{d, 50, 50},
		{d, 95, 95},
		{d, 99, 99},
		{d, 100, 100},
		{d[:1], 50, 1},
		{d[:3], 50, 2},
		{d[:3], 99, 3},
		{nil, 50, 0},
	}
	for _, tt := range tests {
		if got := loadgen.Percentile(tt.give, tt.p); got != tt.want {
			t.Errorf("Percentile(%d values, %v) = %v, want %v", len(tt.give), tt.p, got, tt.want)
		}
	}
}

func TestPayload(t *testing.T) {
	pad := strings.Repeat("x", 256)
	tests := []struct {
		i, size int
		want    string
	}{
		{7, 20, `{"n":7,"pad":"xxxx"}`},
		{7, 16, `{"n":7,"pad":""}`},
		{123, 5, "123"},
		{12345, 3, "345"},
		{1, 0, ""},
	}
	for _, tt := range tests {
		got := string(loadgen.Payload(tt.i, tt.size, pad))
		if got != tt.want {
			t.Errorf("Payload(%d, %d) = %q, want %q", tt.i, tt.size, got, tt.want)
		}
		if tt.size >= 16 && len(got) != tt.size {
			t.Errorf("Payload(%d, %d) has %d bytes", tt.i, tt.size, len(got))
		}
	}
}
