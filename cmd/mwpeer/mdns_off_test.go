package main

import "os"

// The peers these tests start as processes must not find peers of other
// tests (or other test runs on this machine) on the LAN: mDNS, on by
// default in the command, is turned off for them all.
func init() { os.Setenv("MWPEER_MDNS", "false") }
