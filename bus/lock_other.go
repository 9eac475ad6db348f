//go:build !unix

package bus

// lockDir is a no-op where flock does not exist: the port check still
// keeps a second server on the same address off the store.
func lockDir(string) (unlock func(), err error) { return func() {}, nil }
