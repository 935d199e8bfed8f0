package geo

import (
	"fmt"
	"math"
	"time"
)

// EarthRadiusKm is the mean radius of the Earth used by Haversine.
const EarthRadiusKm = 6371.0088

// Point is a position on Earth in decimal degrees.
type Point struct {
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
}

// Validate reports whether p is a real position.
func (p Point) Validate() error {
	if math.IsNaN(p.Lat) || math.IsNaN(p.Lon) || p.Lat < -90 || p.Lat > 90 || p.Lon < -180 || p.Lon > 180 {
		return fmt.Errorf("invalid location %v,%v: latitude must be in [-90,90] and longitude in [-180,180]", p.Lat, p.Lon)
	}
	return nil
}

// Haversine returns the great-circle distance between a and b in kilometres.
func Haversine(a, b Point) float64 {
	const rad = math.Pi / 180
	dLat := (b.Lat - a.Lat) * rad
	dLon := (b.Lon - a.Lon) * rad
	s := math.Sin(dLat/2)*math.Sin(dLat/2) +
		math.Cos(a.Lat*rad)*math.Cos(b.Lat*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * EarthRadiusKm * math.Asin(math.Min(1, math.Sqrt(s)))
}

// Light in fibre covers about 200 km per millisecond; real paths are longer
// than great circles, so the estimate inflates the distance by routeFactor and
// adds a fixed cost for the last miles and the hosts themselves.
const (
	fibreKmPerMs = 200.0
	routeFactor  = 1.5
	baseRTT      = 2 * time.Millisecond
)

// DistanceRTT predicts the round-trip time over a path of the given
// great-circle length. It is the least trusted of the estimates.
func DistanceRTT(km float64) time.Duration {
	if km < 0 || math.IsNaN(km) {
		return 0
	}
	oneWayMs := km * routeFactor / fibreKmPerMs
	return baseRTT + time.Duration(2*oneWayMs*float64(time.Millisecond))
}
