package main

// Main is the worker's main, for tests that run the test binary as the
// worker.
var Main = main
