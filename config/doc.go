// Package config decodes and validates a worker's YAML configuration file
// (the contract's "Worker configuration"; docs/config.md is the user's
// reference).
//
// Load and Parse follow one path: decode strictly (an unknown key or a
// value of the wrong type is an error, never ignored), fill the defaults of
// the keys the file leaves out (all of them are in defaults.go), then
// validate ranges and references (a route naming an undefined backend, a
// retry with max_attempts 0). A bad file gives every problem at once, each
// an *Error reading FILE:LINE: key.path: reason and wrapping ErrInvalid,
// so a worker refuses to start instead of running half-configured.
//
// Default is the config of a worker started without a file. Flags (and
// NATS_URL) override nats.* in cmd/worker, not here.
//
// A *Config is plain data: safe to read from many goroutines once loaded,
// with nothing to close.
package config
