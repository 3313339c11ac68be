//go:build locks_static

package locks

// With `-tags locks_static`: the installed static archive (liblocks.a), so
// the program needs no liblocks.so to run.

// #cgo pkg-config: locks-static
import "C"
