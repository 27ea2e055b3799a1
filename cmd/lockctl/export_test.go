package main

// Main is lockctl's main, for tests that run the test binary as lockctl.
var Main = main
