// Package layers holds no code: it exists for its test, which reads the
// import lines of every package of the module and fails when one imports a
// package that is not below it in the documented order (the slice order in
// layers_test.go), when non-test code imports a test-support package, or when
// a package exists that the order does not list. It also checks that routing
// and geo import nothing of libp2p and that p2p imports nothing of net/http.
package layers
