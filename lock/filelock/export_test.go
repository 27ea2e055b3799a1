//go:build linux

package filelock

// BoottimeOffset exports boottimeOffset to the tests.
var BoottimeOffset = boottimeOffset
