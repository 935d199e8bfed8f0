// Package wait is the one way tests wait for something that happens
// asynchronously (a catalog converging, a stream cancelled, a process
// answering): poll a condition with a deadline instead of sleeping a guessed
// time. It is for tests only; nothing outside a _test.go file imports it.
package wait
