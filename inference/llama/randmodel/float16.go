package randmodel

import "github.com/x448/float16"

// float16bits returns the IEEE 754 binary16 encoding of f, rounded to nearest even.
func float16bits(f float32) uint16 { return float16.Fromfloat32(f).Bits() }

// float16value decodes a binary16 value.
func float16value(h uint16) float32 { return float16.Frombits(h).Float32() }
