package worldtest

import (
	"math/rand/v2"
	"time"

	"github.com/mwpeer/mwpeer/geo"
)

// City is a place a peer can sit.
type City struct {
	Name      string
	Continent string
	geo.Point
}

// Cities are 84 cities on six continents (coordinates rounded to 0.01°),
// interleaved by continent so that any prefix of the table spans the world.
var Cities = interleave([][]City{
	{ // Europe
		{"London", "EU", geo.Point{Lat: 51.51, Lon: -0.13}}, {"Paris", "EU", geo.Point{Lat: 48.86, Lon: 2.35}},
		{"Frankfurt", "EU", geo.Point{Lat: 50.11, Lon: 8.68}}, {"Amsterdam", "EU", geo.Point{Lat: 52.37, Lon: 4.90}},
		{"Madrid", "EU", geo.Point{Lat: 40.42, Lon: -3.70}}, {"Rome", "EU", geo.Point{Lat: 41.90, Lon: 12.50}},
		{"Stockholm", "EU", geo.Point{Lat: 59.33, Lon: 18.07}}, {"Warsaw", "EU", geo.Point{Lat: 52.23, Lon: 21.01}},
		{"Vienna", "EU", geo.Point{Lat: 48.21, Lon: 16.37}}, {"Dublin", "EU", geo.Point{Lat: 53.35, Lon: -6.26}},
		{"Lisbon", "EU", geo.Point{Lat: 38.72, Lon: -9.14}}, {"Athens", "EU", geo.Point{Lat: 37.98, Lon: 23.73}},
		{"Helsinki", "EU", geo.Point{Lat: 60.17, Lon: 24.94}}, {"Zurich", "EU", geo.Point{Lat: 47.38, Lon: 8.54}},
		{"Prague", "EU", geo.Point{Lat: 50.08, Lon: 14.44}}, {"Bucharest", "EU", geo.Point{Lat: 44.43, Lon: 26.10}},
		{"Oslo", "EU", geo.Point{Lat: 59.91, Lon: 10.75}}, {"Milan", "EU", geo.Point{Lat: 45.46, Lon: 9.19}},
		{"Kyiv", "EU", geo.Point{Lat: 50.45, Lon: 30.52}}, {"Istanbul", "EU", geo.Point{Lat: 41.01, Lon: 28.98}},
	},
	{ // North America
		{"New York", "NA", geo.Point{Lat: 40.71, Lon: -74.01}}, {"Chicago", "NA", geo.Point{Lat: 41.88, Lon: -87.63}},
		{"Los Angeles", "NA", geo.Point{Lat: 34.05, Lon: -118.24}}, {"San Francisco", "NA", geo.Point{Lat: 37.77, Lon: -122.42}},
		{"Seattle", "NA", geo.Point{Lat: 47.61, Lon: -122.33}}, {"Dallas", "NA", geo.Point{Lat: 32.78, Lon: -96.80}},
		{"Miami", "NA", geo.Point{Lat: 25.76, Lon: -80.19}}, {"Toronto", "NA", geo.Point{Lat: 43.65, Lon: -79.38}},
		{"Montreal", "NA", geo.Point{Lat: 45.50, Lon: -73.57}}, {"Vancouver", "NA", geo.Point{Lat: 49.28, Lon: -123.12}},
		{"Denver", "NA", geo.Point{Lat: 39.74, Lon: -104.99}}, {"Atlanta", "NA", geo.Point{Lat: 33.75, Lon: -84.39}},
		{"Washington", "NA", geo.Point{Lat: 38.91, Lon: -77.04}}, {"Mexico City", "NA", geo.Point{Lat: 19.43, Lon: -99.13}},
		{"Boston", "NA", geo.Point{Lat: 42.36, Lon: -71.06}}, {"Phoenix", "NA", geo.Point{Lat: 33.45, Lon: -112.07}},
		{"Houston", "NA", geo.Point{Lat: 29.76, Lon: -95.37}}, {"Minneapolis", "NA", geo.Point{Lat: 44.98, Lon: -93.27}},
	},
	{ // Asia
		{"Tokyo", "AS", geo.Point{Lat: 35.68, Lon: 139.69}}, {"Seoul", "AS", geo.Point{Lat: 37.57, Lon: 126.98}},
		{"Singapore", "AS", geo.Point{Lat: 1.35, Lon: 103.82}}, {"Hong Kong", "AS", geo.Point{Lat: 22.32, Lon: 114.17}},
		{"Mumbai", "AS", geo.Point{Lat: 19.08, Lon: 72.88}}, {"Bangalore", "AS", geo.Point{Lat: 12.97, Lon: 77.59}},
		{"Delhi", "AS", geo.Point{Lat: 28.61, Lon: 77.21}}, {"Shanghai", "AS", geo.Point{Lat: 31.23, Lon: 121.47}},
		{"Beijing", "AS", geo.Point{Lat: 39.90, Lon: 116.41}}, {"Taipei", "AS", geo.Point{Lat: 25.03, Lon: 121.57}},
		{"Bangkok", "AS", geo.Point{Lat: 13.76, Lon: 100.50}}, {"Jakarta", "AS", geo.Point{Lat: -6.21, Lon: 106.85}},
		{"Manila", "AS", geo.Point{Lat: 14.60, Lon: 120.98}}, {"Osaka", "AS", geo.Point{Lat: 34.69, Lon: 135.50}},
		{"Dubai", "AS", geo.Point{Lat: 25.20, Lon: 55.27}}, {"Tel Aviv", "AS", geo.Point{Lat: 32.09, Lon: 34.78}},
		{"Kuala Lumpur", "AS", geo.Point{Lat: 3.14, Lon: 101.69}}, {"Hanoi", "AS", geo.Point{Lat: 21.03, Lon: 105.85}},
	},
	{ // South America
		{"São Paulo", "SA", geo.Point{Lat: -23.55, Lon: -46.63}}, {"Buenos Aires", "SA", geo.Point{Lat: -34.60, Lon: -58.38}},
		{"Santiago", "SA", geo.Point{Lat: -33.45, Lon: -70.67}}, {"Bogotá", "SA", geo.Point{Lat: 4.71, Lon: -74.07}},
		{"Lima", "SA", geo.Point{Lat: -12.05, Lon: -77.04}}, {"Rio de Janeiro", "SA", geo.Point{Lat: -22.91, Lon: -43.17}},
		{"Caracas", "SA", geo.Point{Lat: 10.48, Lon: -66.90}}, {"Quito", "SA", geo.Point{Lat: -0.18, Lon: -78.47}},
		{"Montevideo", "SA", geo.Point{Lat: -34.90, Lon: -56.16}}, {"Porto Alegre", "SA", geo.Point{Lat: -30.03, Lon: -51.23}},
	},
	{ // Africa
		{"Lagos", "AF", geo.Point{Lat: 6.52, Lon: 3.38}}, {"Nairobi", "AF", geo.Point{Lat: -1.29, Lon: 36.82}},
		{"Johannesburg", "AF", geo.Point{Lat: -26.20, Lon: 28.05}}, {"Cairo", "AF", geo.Point{Lat: 30.04, Lon: 31.24}},
		{"Cape Town", "AF", geo.Point{Lat: -33.92, Lon: 18.42}}, {"Casablanca", "AF", geo.Point{Lat: 33.57, Lon: -7.59}},
		{"Accra", "AF", geo.Point{Lat: 5.60, Lon: -0.19}}, {"Addis Ababa", "AF", geo.Point{Lat: 9.03, Lon: 38.74}},
		{"Dakar", "AF", geo.Point{Lat: 14.72, Lon: -17.47}}, {"Kinshasa", "AF", geo.Point{Lat: -4.44, Lon: 15.27}},
	},
	{ // Oceania
		{"Sydney", "OC", geo.Point{Lat: -33.87, Lon: 151.21}}, {"Melbourne", "OC", geo.Point{Lat: -37.81, Lon: 144.96}},
		{"Auckland", "OC", geo.Point{Lat: -36.85, Lon: 174.76}}, {"Perth", "OC", geo.Point{Lat: -31.95, Lon: 115.86}},
		{"Brisbane", "OC", geo.Point{Lat: -27.47, Lon: 153.03}}, {"Adelaide", "OC", geo.Point{Lat: -34.93, Lon: 138.60}},
		{"Wellington", "OC", geo.Point{Lat: -41.29, Lon: 174.78}}, {"Canberra", "OC", geo.Point{Lat: -35.28, Lon: 149.13}},
	},
})

// interleave takes one city of each group in turn, weighted so that a
// prefix keeps the groups' proportions roughly (Europe, North America and
// Asia hold most peers).
func interleave(groups [][]City) []City {
	total := 0
	for _, g := range groups {
		total += len(g)
	}
	out := make([]City, 0, total)
	taken := make([]int, len(groups))
	for len(out) < total {
		// The group furthest behind its share goes next.
		best, lag := -1, -1.0
		for i, g := range groups {
			if taken[i] == len(g) {
				continue
			}
			share := float64(len(out)+1) * float64(len(g)) / float64(total)
			if l := share - float64(taken[i]); l > lag {
				best, lag = i, l
			}
		}
		out = append(out, groups[best][taken[best]])
		taken[best]++
	}
	return out
}

// Link model: light in fibre covers about 200 km per millisecond (2/3 c),
// and a route is about 1.5 times the great circle. Each peer adds its own
// access delay (the last mile, which Vivaldi models as a height), and every
// link deviates from the model by up to ±Jitter (routes are not geodesics,
// which is also what keeps a network coordinate from being exact).
const (
	FibreKmPerMs = 200.0
	RouteFactor  = 1.5
	Jitter       = 0.10
)

// OneWay is the one-way delay between two peers: the fibre estimate over
// the haversine distance of their cities, scaled by a link factor in
// [1-Jitter, 1+Jitter], plus both access delays.
func OneWay(a, b City, accessA, accessB time.Duration, rng *rand.Rand) time.Duration {
	ms := geo.Haversine(a.Point, b.Point) * RouteFactor / FibreKmPerMs
	ms *= 1 + Jitter*(2*rng.Float64()-1)
	return accessA + accessB + time.Duration(ms*float64(time.Millisecond))
}
