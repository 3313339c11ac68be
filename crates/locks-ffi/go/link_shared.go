//go:build !locks_static

package locks

// The installed shared library (liblocks.so), found through pkg-config.

// #cgo pkg-config: locks
import "C"
