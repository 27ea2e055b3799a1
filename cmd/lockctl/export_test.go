package main

// Main is lockctl's main, for tests that run the test binary as lockctl.
var Main = main

// MaxLine is the longest serve-stdio line.
const MaxLine = maxLine
