package cache_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/cache"
)

// TestRSSFlat stores 1,000,000 distinct ~1 KiB results in a 64 MB cache
// and reports the process's memory; it is a measurement, run on demand:
//
//	BREAKWATER_RSS=1 go test -run RSSFlat -v ./cache/
func TestRSSFlat(t *testing.T) {
	if os.Getenv("BREAKWATER_RSS") == "" {
		t.Skip("a measurement: set BREAKWATER_RSS=1 to run it")
	}
	c := newCache(t, cache.Options{MaxSizeMB: 64})
	p := cache.Policy{TTL: time.Hour}
	body := bytes.Repeat([]byte("r"), 1024)
	ctx := context.Background()
	for i := range 1_000_000 {
		copy(body, fmt.Sprint(i))
		k := cache.Key("bulk", body, nil, nil)
		if _, ok := c.Get(ctx, k, p); !ok {
			c.Set(k, p, body, "svc")
		}
		if i%250_000 == 249_999 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			t.Logf("after %7d: rss %s, heap in use %d MB, cache bytes %d MB, entries %d",
				i+1, vmRSS(), ms.HeapInuse>>20, c.Stats().Bytes>>20, c.Stats().Entries)
		}
	}
	if st := c.Stats(); st.Bytes > 64<<20 {
		t.Fatalf("cache holds %d bytes, over 64 MB", st.Bytes)
	}
}

func vmRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	return "?"
}
