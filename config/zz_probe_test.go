package config_test

import (
	"fmt"
	"testing"

	"github.com/breakwater/breakwater/config"
)

func TestZZProbe(t *testing.T) {
	for _, give := range []string{
		"worker: 5\n",
		"worker:\n  concurrency: {a: 1}\n",
		"worker:\n  concurrency: [1]\n",
		"worker:\n  concurrency: abcdefghijklmnop\n",
		"backends:\n  a:\n    builtin: echo\n    retry: 5\n",
		"backends:\n  a:\n    builtin: echo\n    tags: a\n",
		"backends:\n  a:\n    builtin: echo\n    rate_limit:\n      n: 5\n",
		"backends: [a]\n",
		"routes:\n  x:\n    backends: echo\n",
		"worker: {ack_wait: 30}\n",
		"worker: {ack_wait: -1s}\n",
		"backends:\n  a:\n    builtin: echo\n    retry: {jitter: 0}\n",
		"backends:\n  a:\n    builtin: echo\n    http:\n      headers: {timeout: 0}\n      url: http://x\n",
		"worker: {}\n---\n",
		"worker: {}\n...\n",
		"--- \nworker: {}\n",
		"&a worker: {}\n",
		"x: &a [*a]\n",
		"backends:\n  \"\": {builtin: echo}\n",
		"backends:\n  a: ~\n",
		"routes:\n  x: ~\n",
		"nats: {url: 'a,,b'}\n",
		"nats: {url: 'http://x'}\n",
		"\t\n",
		"a: b: c\n",
		"backends:\n  a:\n    builtin: echo\n    breaker: {failure_rate: 0}\n",
		"routes:\n  x: {backends: [\"builtin:echo\"], cache: {}}\n",
		"streams: {replicas: 0}\n",
		"1: 2\n",
		"? [a]\n: 1\n",
		"backends:\n  a:\n    builtin: echo\n    max_concurrency: 1.5\n",
	} {
		_, err := config.Parse("w.yaml", []byte(give))
		fmt.Printf("%q\n   -> %v\n", give, err)
	}
}
