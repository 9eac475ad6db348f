// Package config decodes and validates a worker's YAML configuration file.
// Decoding is strict: an unknown key, a wrong type, an impossible value or a
// route naming an unknown backend is an error that names the file, the line
// and the reason, and the worker refuses to start.
package config
