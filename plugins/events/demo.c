/* The demo data set: a seeded travel platform (users, destinations, trips,
 * activities, offers, sessions of search -> view -> create_trip -> book) fed
 * through the ingest path in chunks on the loop, so that metrics, first-seen
 * data and bitmaps are exactly what events.track would have made.
 *
 * Every random draw comes from a stream seeded by (seed, what, day, user), so
 * the output does not depend on how the work is cut into chunks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/rpc.h"
#include "core/server.h"
#include "core/sx.h"
#include "plugins/events/internal.h"
#include "store/store.h"

#define DEMO_USERS_MAX 10000000
#define DEMO_DAYS_MAX 3650
#define CHUNK_EVENTS 4000     /* events per loop turn */
#define CHUNK_VISITS 50000    /* (user, day) pairs looked at per loop turn */
#define CHUNK_USERS 5000      /* users.put per loop turn */
#define PENDING_MAX (64u << 20) /* wait for the writer above this many bytes */
#define NTAGS 16

/* ---- the world ---- */

static const char *const tag_names[NTAGS] = {
	"beach", "city", "culture", "nature", "ski", "food", "nightlife", "family",
	"romantic", "adventure", "history", "island", "mountains", "wellness", "shopping", "budget",
};
enum { T_BEACH, T_CITY, T_CULTURE, T_NATURE, T_SKI, T_FOOD, T_NIGHT, T_FAMILY,
       T_ROMANTIC, T_ADVENTURE, T_HISTORY, T_ISLAND, T_MOUNTAINS, T_WELLNESS, T_SHOPPING, T_BUDGET };
#define B(t) (1u << (t))

struct dest {
	const char *key, *name, *country, *region;
	double price; /* per night and traveller, EUR */
	unsigned tags;
	double lat, lon;
};

/* Real places a European-based platform sells, worldwide, at the size of a
 * real catalogue (hundreds), so that a user's next destinations are not
 * mostly the top ten anyway. Positions are approximate centres; prices are
 * typical mid-range nights per traveller. */
static const struct dest dests[] = {
	{"lisbon", "Lisbon", "PT", "Southern Europe", 95, B(T_CITY) | B(T_CULTURE) | B(T_FOOD) | B(T_BUDGET), 38.7, -9.1},
	{"porto", "Porto", "PT", "Southern Europe", 85, B(T_CITY) | B(T_FOOD) | B(T_HISTORY) | B(T_BUDGET), 41.2, -8.6},
	{"algarve", "Algarve", "PT", "Southern Europe", 110, B(T_BEACH) | B(T_FAMILY) | B(T_NATURE), 37.1, -8.2},
	{"barcelona", "Barcelona", "ES", "Southern Europe", 120, B(T_CITY) | B(T_BEACH) | B(T_NIGHT) | B(T_FOOD), 41.4, 2.2},
	{"madrid", "Madrid", "ES", "Southern Europe", 105, B(T_CITY) | B(T_CULTURE) | B(T_NIGHT) | B(T_SHOPPING), 40.4, -3.7},
	{"seville", "Seville", "ES", "Southern Europe", 90, B(T_CULTURE) | B(T_HISTORY) | B(T_ROMANTIC), 37.4, -6.0},
	{"mallorca", "Mallorca", "ES", "Southern Europe", 130, B(T_BEACH) | B(T_ISLAND) | B(T_FAMILY), 39.6, 2.9},
	{"tenerife", "Tenerife", "ES", "Atlantic", 115, B(T_BEACH) | B(T_ISLAND) | B(T_NATURE), 28.3, -16.6},
	{"rome", "Rome", "IT", "Southern Europe", 125, B(T_CITY) | B(T_HISTORY) | B(T_CULTURE) | B(T_FOOD), 41.9, 12.5},
	{"florence", "Florence", "IT", "Southern Europe", 130, B(T_CULTURE) | B(T_ROMANTIC) | B(T_FOOD), 43.8, 11.3},
	{"venice", "Venice", "IT", "Southern Europe", 160, B(T_ROMANTIC) | B(T_HISTORY) | B(T_CULTURE), 45.4, 12.3},
	{"amalfi", "Amalfi Coast", "IT", "Southern Europe", 190, B(T_BEACH) | B(T_ROMANTIC) | B(T_FOOD), 40.6, 14.6},
	{"dolomites", "Dolomites", "IT", "Alps", 140, B(T_SKI) | B(T_MOUNTAINS) | B(T_NATURE) | B(T_ADVENTURE), 46.4, 11.8},
	{"paris", "Paris", "FR", "Western Europe", 170, B(T_CITY) | B(T_ROMANTIC) | B(T_CULTURE) | B(T_SHOPPING), 48.9, 2.4},
	{"nice", "Nice", "FR", "Western Europe", 150, B(T_BEACH) | B(T_CITY) | B(T_FOOD), 43.7, 7.3},
	{"chamonix", "Chamonix", "FR", "Alps", 175, B(T_SKI) | B(T_MOUNTAINS) | B(T_ADVENTURE), 45.9, 6.9},
	{"london", "London", "GB", "Western Europe", 180, B(T_CITY) | B(T_CULTURE) | B(T_SHOPPING) | B(T_NIGHT), 51.5, -0.1},
	{"edinburgh", "Edinburgh", "GB", "Western Europe", 120, B(T_CITY) | B(T_HISTORY) | B(T_CULTURE), 56.0, -3.2},
	{"amsterdam", "Amsterdam", "NL", "Western Europe", 150, B(T_CITY) | B(T_NIGHT) | B(T_CULTURE), 52.4, 4.9},
	{"berlin", "Berlin", "DE", "Central Europe", 100, B(T_CITY) | B(T_NIGHT) | B(T_HISTORY) | B(T_BUDGET), 52.5, 13.4},
	{"munich", "Munich", "DE", "Central Europe", 130, B(T_CITY) | B(T_FOOD) | B(T_FAMILY), 48.1, 11.6},
	{"vienna", "Vienna", "AT", "Central Europe", 125, B(T_CITY) | B(T_CULTURE) | B(T_HISTORY), 48.2, 16.4},
	{"innsbruck", "Innsbruck", "AT", "Alps", 135, B(T_SKI) | B(T_MOUNTAINS) | B(T_FAMILY), 47.3, 11.4},
	{"zermatt", "Zermatt", "CH", "Alps", 240, B(T_SKI) | B(T_MOUNTAINS) | B(T_WELLNESS), 46.0, 7.7},
	{"prague", "Prague", "CZ", "Central Europe", 75, B(T_CITY) | B(T_HISTORY) | B(T_BUDGET) | B(T_NIGHT), 50.1, 14.4},
	{"budapest", "Budapest", "HU", "Central Europe", 70, B(T_CITY) | B(T_WELLNESS) | B(T_BUDGET), 47.5, 19.0},
	{"krakow", "Krakow", "PL", "Central Europe", 60, B(T_CITY) | B(T_HISTORY) | B(T_BUDGET), 50.1, 19.9},
	{"athens", "Athens", "GR", "Southern Europe", 95, B(T_CITY) | B(T_HISTORY) | B(T_CULTURE), 38.0, 23.7},
	{"santorini", "Santorini", "GR", "Southern Europe", 210, B(T_BEACH) | B(T_ISLAND) | B(T_ROMANTIC), 36.4, 25.4},
	{"crete", "Crete", "GR", "Southern Europe", 105, B(T_BEACH) | B(T_ISLAND) | B(T_FAMILY) | B(T_HISTORY), 35.3, 24.9},
	{"dubrovnik", "Dubrovnik", "HR", "Southern Europe", 140, B(T_BEACH) | B(T_HISTORY) | B(T_ROMANTIC), 42.6, 18.1},
	{"reykjavik", "Reykjavik", "IS", "Northern Europe", 190, B(T_NATURE) | B(T_ADVENTURE) | B(T_WELLNESS), 64.1, -21.9},
	{"copenhagen", "Copenhagen", "DK", "Northern Europe", 165, B(T_CITY) | B(T_FOOD) | B(T_FAMILY), 55.7, 12.6},
	{"stockholm", "Stockholm", "SE", "Northern Europe", 155, B(T_CITY) | B(T_NATURE) | B(T_CULTURE), 59.3, 18.1},
	{"istanbul", "Istanbul", "TR", "Middle East", 80, B(T_CITY) | B(T_HISTORY) | B(T_FOOD) | B(T_SHOPPING), 41.0, 29.0},
	{"marrakech", "Marrakech", "MA", "Africa", 75, B(T_CULTURE) | B(T_SHOPPING) | B(T_ADVENTURE), 31.6, -8.0},
	{"cape-town", "Cape Town", "ZA", "Africa", 110, B(T_NATURE) | B(T_BEACH) | B(T_ADVENTURE), -33.9, 18.4},
	{"dubai", "Dubai", "AE", "Middle East", 220, B(T_CITY) | B(T_SHOPPING) | B(T_BEACH), 25.2, 55.3},
	{"new-york", "New York", "US", "North America", 230, B(T_CITY) | B(T_SHOPPING) | B(T_CULTURE) | B(T_NIGHT), 40.7, -74.0},
	{"cancun", "Cancun", "MX", "North America", 140, B(T_BEACH) | B(T_NIGHT) | B(T_FAMILY), 21.2, -86.8},
	{"banff", "Banff", "CA", "North America", 170, B(T_SKI) | B(T_NATURE) | B(T_MOUNTAINS), 51.2, -115.6},
	{"tokyo", "Tokyo", "JP", "East Asia", 160, B(T_CITY) | B(T_FOOD) | B(T_CULTURE) | B(T_SHOPPING), 35.7, 139.7},
	{"kyoto", "Kyoto", "JP", "East Asia", 150, B(T_CULTURE) | B(T_HISTORY) | B(T_ROMANTIC), 35.0, 135.8},
	{"bangkok", "Bangkok", "TH", "Southeast Asia", 65, B(T_CITY) | B(T_FOOD) | B(T_NIGHT) | B(T_BUDGET), 13.8, 100.5},
	{"bali", "Bali", "ID", "Southeast Asia", 90, B(T_BEACH) | B(T_ISLAND) | B(T_WELLNESS) | B(T_ROMANTIC), -8.4, 115.2},
	{"maldives", "Maldives", "MV", "South Asia", 380, B(T_BEACH) | B(T_ISLAND) | B(T_ROMANTIC) | B(T_WELLNESS), 3.2, 73.2},
	{"sydney", "Sydney", "AU", "Oceania", 200, B(T_CITY) | B(T_BEACH) | B(T_NATURE), -33.9, 151.2},
	{"queenstown", "Queenstown", "NZ", "Oceania", 180, B(T_ADVENTURE) | B(T_SKI) | B(T_NATURE), -45.0, 168.7},
	{"valencia", "Valencia", "ES", "Southern Europe", 90, B(T_CITY) | B(T_BEACH) | B(T_FOOD) | B(T_FAMILY), 39.5, -0.4},
	{"malaga", "Malaga", "ES", "Southern Europe", 95, B(T_BEACH) | B(T_CITY) | B(T_FOOD), 36.7, -4.4},
	{"granada", "Granada", "ES", "Southern Europe", 80, B(T_HISTORY) | B(T_CULTURE) | B(T_ROMANTIC) | B(T_BUDGET), 37.2, -3.6},
	{"ibiza", "Ibiza", "ES", "Southern Europe", 170, B(T_BEACH) | B(T_ISLAND) | B(T_NIGHT), 38.9, 1.4},
	{"menorca", "Menorca", "ES", "Southern Europe", 135, B(T_BEACH) | B(T_ISLAND) | B(T_FAMILY) | B(T_NATURE), 39.9, 4.1},
	{"san-sebastian", "San Sebastian", "ES", "Southern Europe", 140, B(T_FOOD) | B(T_BEACH) | B(T_CITY), 43.3, -2.0},
	{"bilbao", "Bilbao", "ES", "Southern Europe", 100, B(T_CITY) | B(T_CULTURE) | B(T_FOOD), 43.3, -2.9},
	{"costa-brava", "Costa Brava", "ES", "Southern Europe", 115, B(T_BEACH) | B(T_FAMILY) | B(T_NATURE), 41.8, 3.0},
	{"cordoba", "Cordoba", "ES", "Southern Europe", 75, B(T_HISTORY) | B(T_CULTURE) | B(T_BUDGET), 37.9, -4.8},
	{"toledo", "Toledo", "ES", "Southern Europe", 80, B(T_HISTORY) | B(T_CULTURE), 39.9, -4.0},
	{"sierra-nevada", "Sierra Nevada", "ES", "Southern Europe", 110, B(T_SKI) | B(T_MOUNTAINS) | B(T_BUDGET), 37.1, -3.4},
	{"sintra", "Sintra", "PT", "Southern Europe", 100, B(T_HISTORY) | B(T_ROMANTIC) | B(T_CULTURE), 38.8, -9.4},
	{"madeira", "Madeira", "PT", "Atlantic", 105, B(T_NATURE) | B(T_ISLAND) | B(T_ADVENTURE), 32.7, -16.9},
	{"azores", "Azores", "PT", "Atlantic", 110, B(T_NATURE) | B(T_ISLAND) | B(T_ADVENTURE), 37.8, -25.5},
	{"gran-canaria", "Gran Canaria", "ES", "Atlantic", 105, B(T_BEACH) | B(T_ISLAND) | B(T_FAMILY), 27.9, -15.6},
	{"lanzarote", "Lanzarote", "ES", "Atlantic", 110, B(T_BEACH) | B(T_ISLAND) | B(T_NATURE), 29.0, -13.6},
	{"fuerteventura", "Fuerteventura", "ES", "Atlantic", 100, B(T_BEACH) | B(T_ISLAND) | B(T_ADVENTURE), 28.4, -14.0},
	{"cape-verde", "Cape Verde", "CV", "Atlantic", 110, B(T_BEACH) | B(T_ISLAND) | B(T_BUDGET), 16.7, -22.9},
	{"milan", "Milan", "IT", "Southern Europe", 150, B(T_CITY) | B(T_SHOPPING) | B(T_FOOD), 45.5, 9.2},
	{"naples", "Naples", "IT", "Southern Europe", 80, B(T_FOOD) | B(T_HISTORY) | B(T_BUDGET) | B(T_CITY), 40.9, 14.3},
	{"sicily", "Sicily", "IT", "Southern Europe", 100, B(T_BEACH) | B(T_ISLAND) | B(T_HISTORY) | B(T_FOOD), 37.6, 14.0},
	{"sardinia", "Sardinia", "IT", "Southern Europe", 150, B(T_BEACH) | B(T_ISLAND) | B(T_NATURE), 40.1, 9.0},
	{"cinque-terre", "Cinque Terre", "IT", "Southern Europe", 140, B(T_ROMANTIC) | B(T_NATURE) | B(T_BEACH), 44.1, 9.7},
	{"lake-como", "Lake Como", "IT", "Southern Europe", 190, B(T_ROMANTIC) | B(T_NATURE) | B(T_WELLNESS), 46.0, 9.3},
	{"tuscany", "Tuscany", "IT", "Southern Europe", 140, B(T_FOOD) | B(T_ROMANTIC) | B(T_NATURE) | B(T_CULTURE), 43.4, 11.0},
	{"bologna", "Bologna", "IT", "Southern Europe", 95, B(T_FOOD) | B(T_CITY) | B(T_HISTORY), 44.5, 11.3},
	{"verona", "Verona", "IT", "Southern Europe", 110, B(T_ROMANTIC) | B(T_HISTORY) | B(T_CULTURE), 45.4, 11.0},
	{"puglia", "Puglia", "IT", "Southern Europe", 100, B(T_BEACH) | B(T_FOOD) | B(T_BUDGET), 40.8, 17.0},
	{"lake-garda", "Lake Garda", "IT", "Alps", 120, B(T_FAMILY) | B(T_NATURE) | B(T_WELLNESS), 45.6, 10.6},
	{"cortina", "Cortina d'Ampezzo", "IT", "Alps", 210, B(T_SKI) | B(T_MOUNTAINS) | B(T_WELLNESS), 46.5, 12.1},
	{"mykonos", "Mykonos", "GR", "Southern Europe", 220, B(T_BEACH) | B(T_ISLAND) | B(T_NIGHT), 37.4, 25.3},
	{"rhodes", "Rhodes", "GR", "Southern Europe", 95, B(T_BEACH) | B(T_ISLAND) | B(T_HISTORY) | B(T_FAMILY), 36.4, 28.2},
	{"corfu", "Corfu", "GR", "Southern Europe", 100, B(T_BEACH) | B(T_ISLAND) | B(T_FAMILY), 39.6, 19.9},
	{"naxos", "Naxos", "GR", "Southern Europe", 105, B(T_BEACH) | B(T_ISLAND) | B(T_FAMILY), 37.1, 25.4},
	{"thessaloniki", "Thessaloniki", "GR", "Southern Europe", 70, B(T_CITY) | B(T_FOOD) | B(T_HISTORY) | B(T_BUDGET), 40.6, 22.9},
	{"split", "Split", "HR", "Southern Europe", 105, B(T_BEACH) | B(T_HISTORY) | B(T_NIGHT), 43.5, 16.4},
	{"hvar", "Hvar", "HR", "Southern Europe", 140, B(T_BEACH) | B(T_ISLAND) | B(T_NIGHT), 43.2, 16.4},
	{"kotor", "Kotor", "ME", "Southern Europe", 85, B(T_HISTORY) | B(T_ROMANTIC) | B(T_BEACH), 42.4, 18.8},
	{"malta", "Malta", "MT", "Southern Europe", 95, B(T_BEACH) | B(T_ISLAND) | B(T_HISTORY), 35.9, 14.5},
	{"paphos", "Paphos", "CY", "Southern Europe", 95, B(T_BEACH) | B(T_HISTORY) | B(T_FAMILY), 34.8, 32.4},
	{"saranda", "Saranda", "AL", "Southern Europe", 55, B(T_BEACH) | B(T_BUDGET) | B(T_NATURE), 39.9, 20.0},
	{"lyon", "Lyon", "FR", "Western Europe", 110, B(T_FOOD) | B(T_CITY) | B(T_CULTURE), 45.8, 4.8},
	{"bordeaux", "Bordeaux", "FR", "Western Europe", 120, B(T_FOOD) | B(T_CITY) | B(T_ROMANTIC), 44.8, -0.6},
	{"marseille", "Marseille", "FR", "Western Europe", 100, B(T_CITY) | B(T_BEACH) | B(T_FOOD), 43.3, 5.4},
	{"provence", "Provence", "FR", "Western Europe", 140, B(T_ROMANTIC) | B(T_FOOD) | B(T_NATURE), 43.9, 5.0},
	{"corsica", "Corsica", "FR", "Western Europe", 140, B(T_BEACH) | B(T_ISLAND) | B(T_NATURE) | B(T_ADVENTURE), 42.0, 9.0},
	{"brittany", "Brittany", "FR", "Western Europe", 100, B(T_NATURE) | B(T_BEACH) | B(T_FAMILY) | B(T_FOOD), 48.2, -3.0},
	{"normandy", "Normandy", "FR", "Western Europe", 100, B(T_HISTORY) | B(T_NATURE) | B(T_FOOD), 49.2, -0.4},
	{"loire-valley", "Loire Valley", "FR", "Western Europe", 115, B(T_HISTORY) | B(T_ROMANTIC) | B(T_FOOD), 47.4, 0.7},
	{"strasbourg", "Strasbourg", "FR", "Western Europe", 110, B(T_HISTORY) | B(T_CULTURE) | B(T_FOOD), 48.6, 7.8},
	{"biarritz", "Biarritz", "FR", "Western Europe", 150, B(T_BEACH) | B(T_ADVENTURE) | B(T_FOOD), 43.5, -1.6},
	{"disneyland-paris", "Disneyland Paris", "FR", "Western Europe", 190, B(T_FAMILY) | B(T_SHOPPING), 48.9, 2.8},
	{"val-thorens", "Val Thorens", "FR", "Alps", 190, B(T_SKI) | B(T_MOUNTAINS) | B(T_NIGHT), 45.3, 6.6},
	{"courchevel", "Courchevel", "FR", "Alps", 320, B(T_SKI) | B(T_MOUNTAINS) | B(T_WELLNESS), 45.4, 6.6},
	{"brussels", "Brussels", "BE", "Western Europe", 115, B(T_CITY) | B(T_FOOD) | B(T_CULTURE), 50.8, 4.4},
	{"bruges", "Bruges", "BE", "Western Europe", 120, B(T_ROMANTIC) | B(T_HISTORY) | B(T_FOOD), 51.2, 3.2},
	{"luxembourg", "Luxembourg", "LU", "Western Europe", 140, B(T_CITY) | B(T_HISTORY), 49.6, 6.1},
	{"rotterdam", "Rotterdam", "NL", "Western Europe", 115, B(T_CITY) | B(T_CULTURE), 51.9, 4.5},
	{"dublin", "Dublin", "IE", "Western Europe", 150, B(T_CITY) | B(T_NIGHT) | B(T_CULTURE), 53.3, -6.3},
	{"galway", "Galway", "IE", "Western Europe", 110, B(T_NATURE) | B(T_CULTURE) | B(T_NIGHT), 53.3, -9.1},
	{"kerry", "Ring of Kerry", "IE", "Western Europe", 105, B(T_NATURE) | B(T_ADVENTURE), 51.9, -9.9},
	{"cornwall", "Cornwall", "GB", "Western Europe", 120, B(T_BEACH) | B(T_NATURE) | B(T_FAMILY), 50.3, -5.0},
	{"lake-district", "Lake District", "GB", "Western Europe", 110, B(T_NATURE) | B(T_MOUNTAINS) | B(T_ADVENTURE), 54.5, -3.1},
	{"scottish-highlands", "Scottish Highlands", "GB", "Western Europe", 115, B(T_NATURE) | B(T_MOUNTAINS) | B(T_ADVENTURE) | B(T_HISTORY), 57.1, -4.7},
	{"manchester", "Manchester", "GB", "Western Europe", 100, B(T_CITY) | B(T_NIGHT) | B(T_SHOPPING), 53.5, -2.2},
	{"bath", "Bath", "GB", "Western Europe", 130, B(T_HISTORY) | B(T_WELLNESS) | B(T_ROMANTIC), 51.4, -2.4},
	{"york", "York", "GB", "Western Europe", 100, B(T_HISTORY) | B(T_CULTURE), 54.0, -1.1},
	{"hamburg", "Hamburg", "DE", "Central Europe", 120, B(T_CITY) | B(T_NIGHT) | B(T_FOOD), 53.6, 10.0},
	{"cologne", "Cologne", "DE", "Central Europe", 105, B(T_CITY) | B(T_CULTURE) | B(T_NIGHT), 50.9, 7.0},
	{"dresden", "Dresden", "DE", "Central Europe", 90, B(T_CULTURE) | B(T_HISTORY), 51.1, 13.7},
	{"heidelberg", "Heidelberg", "DE", "Central Europe", 100, B(T_HISTORY) | B(T_ROMANTIC), 49.4, 8.7},
	{"black-forest", "Black Forest", "DE", "Central Europe", 100, B(T_NATURE) | B(T_WELLNESS) | B(T_FAMILY), 48.0, 8.2},
	{"ruegen", "Ruegen", "DE", "Northern Europe", 95, B(T_BEACH) | B(T_ISLAND) | B(T_FAMILY) | B(T_NATURE), 54.4, 13.4},
	{"sylt", "Sylt", "DE", "Northern Europe", 170, B(T_BEACH) | B(T_ISLAND) | B(T_WELLNESS), 54.9, 8.3},
	{"berchtesgaden", "Berchtesgaden", "DE", "Alps", 105, B(T_MOUNTAINS) | B(T_NATURE) | B(T_FAMILY), 47.6, 13.0},
	{"garmisch", "Garmisch-Partenkirchen", "DE", "Alps", 125, B(T_SKI) | B(T_MOUNTAINS) | B(T_ADVENTURE), 47.5, 11.1},
	{"salzburg", "Salzburg", "AT", "Central Europe", 120, B(T_CULTURE) | B(T_HISTORY) | B(T_ROMANTIC), 47.8, 13.0},
	{"hallstatt", "Hallstatt", "AT", "Alps", 130, B(T_NATURE) | B(T_ROMANTIC) | B(T_MOUNTAINS), 47.6, 13.6},
	{"st-anton", "St. Anton", "AT", "Alps", 200, B(T_SKI) | B(T_MOUNTAINS) | B(T_NIGHT), 47.1, 10.3},
	{"kitzbuehel", "Kitzbuehel", "AT", "Alps", 190, B(T_SKI) | B(T_MOUNTAINS) | B(T_WELLNESS), 47.4, 12.4},
	{"zurich", "Zurich", "CH", "Central Europe", 210, B(T_CITY) | B(T_CULTURE) | B(T_SHOPPING), 47.4, 8.5},
	{"geneva", "Geneva", "CH", "Central Europe", 200, B(T_CITY) | B(T_WELLNESS) | B(T_CULTURE), 46.2, 6.1},
	{"lucerne", "Lucerne", "CH", "Alps", 180, B(T_NATURE) | B(T_ROMANTIC) | B(T_MOUNTAINS), 47.1, 8.3},
	{"interlaken", "Interlaken", "CH", "Alps", 170, B(T_ADVENTURE) | B(T_MOUNTAINS) | B(T_NATURE), 46.7, 7.9},
	{"st-moritz", "St. Moritz", "CH", "Alps", 300, B(T_SKI) | B(T_WELLNESS) | B(T_MOUNTAINS), 46.5, 9.8},
	{"gdansk", "Gdansk", "PL", "Central Europe", 65, B(T_CITY) | B(T_HISTORY) | B(T_BEACH) | B(T_BUDGET), 54.4, 18.6},
	{"warsaw", "Warsaw", "PL", "Central Europe", 70, B(T_CITY) | B(T_HISTORY) | B(T_BUDGET), 52.2, 21.0},
	{"zakopane", "Zakopane", "PL", "Central Europe", 60, B(T_SKI) | B(T_MOUNTAINS) | B(T_BUDGET), 49.3, 19.9},
	{"cesky-krumlov", "Cesky Krumlov", "CZ", "Central Europe", 70, B(T_HISTORY) | B(T_ROMANTIC) | B(T_BUDGET), 48.8, 14.3},
	{"bratislava", "Bratislava", "SK", "Central Europe", 65, B(T_CITY) | B(T_BUDGET) | B(T_NIGHT), 48.1, 17.1},
	{"lake-balaton", "Lake Balaton", "HU", "Central Europe", 65, B(T_FAMILY) | B(T_BEACH) | B(T_BUDGET) | B(T_WELLNESS), 46.8, 17.7},
	{"ljubljana", "Ljubljana", "SI", "Central Europe", 85, B(T_CITY) | B(T_NATURE) | B(T_CULTURE), 46.1, 14.5},
	{"lake-bled", "Lake Bled", "SI", "Alps", 110, B(T_NATURE) | B(T_ROMANTIC) | B(T_ADVENTURE), 46.4, 14.1},
	{"zagreb", "Zagreb", "HR", "Central Europe", 70, B(T_CITY) | B(T_CULTURE) | B(T_BUDGET), 45.8, 16.0},
	{"bucharest", "Bucharest", "RO", "Eastern Europe", 60, B(T_CITY) | B(T_NIGHT) | B(T_BUDGET), 44.4, 26.1},
	{"brasov", "Brasov", "RO", "Eastern Europe", 55, B(T_HISTORY) | B(T_MOUNTAINS) | B(T_BUDGET), 45.7, 25.6},
	{"sofia", "Sofia", "BG", "Eastern Europe", 50, B(T_CITY) | B(T_BUDGET) | B(T_HISTORY), 42.7, 23.3},
	{"varna", "Varna", "BG", "Eastern Europe", 60, B(T_BEACH) | B(T_NIGHT) | B(T_BUDGET), 43.2, 27.9},
	{"bansko", "Bansko", "BG", "Eastern Europe", 55, B(T_SKI) | B(T_MOUNTAINS) | B(T_BUDGET), 41.8, 23.5},
	{"belgrade", "Belgrade", "RS", "Eastern Europe", 55, B(T_CITY) | B(T_NIGHT) | B(T_BUDGET), 44.8, 20.5},
	{"sarajevo", "Sarajevo", "BA", "Eastern Europe", 50, B(T_HISTORY) | B(T_CULTURE) | B(T_BUDGET), 43.9, 18.4},
	{"ohrid", "Lake Ohrid", "MK", "Eastern Europe", 45, B(T_NATURE) | B(T_HISTORY) | B(T_BUDGET), 41.1, 20.8},
	{"tbilisi", "Tbilisi", "GE", "Eastern Europe", 55, B(T_FOOD) | B(T_CULTURE) | B(T_BUDGET), 41.7, 44.8},
	{"oslo", "Oslo", "NO", "Northern Europe", 180, B(T_CITY) | B(T_CULTURE) | B(T_NATURE), 59.9, 10.8},
	{"bergen", "Bergen", "NO", "Northern Europe", 160, B(T_NATURE) | B(T_CITY) | B(T_ADVENTURE), 60.4, 5.3},
	{"geiranger", "Geirangerfjord", "NO", "Northern Europe", 170, B(T_NATURE) | B(T_ROMANTIC) | B(T_ADVENTURE), 62.1, 7.2},
	{"lofoten", "Lofoten", "NO", "Northern Europe", 170, B(T_NATURE) | B(T_ISLAND) | B(T_ADVENTURE), 68.2, 14.6},
	{"tromso", "Tromso", "NO", "Northern Europe", 175, B(T_NATURE) | B(T_ADVENTURE) | B(T_SKI), 69.6, 19.0},
	{"helsinki", "Helsinki", "FI", "Northern Europe", 150, B(T_CITY) | B(T_CULTURE) | B(T_WELLNESS), 60.2, 24.9},
	{"lapland", "Lapland", "FI", "Northern Europe", 190, B(T_NATURE) | B(T_SKI) | B(T_FAMILY) | B(T_ADVENTURE), 66.5, 25.7},
	{"gothenburg", "Gothenburg", "SE", "Northern Europe", 140, B(T_CITY) | B(T_FOOD), 57.7, 12.0},
	{"tallinn", "Tallinn", "EE", "Northern Europe", 80, B(T_HISTORY) | B(T_CITY) | B(T_BUDGET), 59.4, 24.8},
	{"riga", "Riga", "LV", "Northern Europe", 70, B(T_CITY) | B(T_HISTORY) | B(T_NIGHT) | B(T_BUDGET), 56.9, 24.1},
	{"vilnius", "Vilnius", "LT", "Northern Europe", 65, B(T_HISTORY) | B(T_CULTURE) | B(T_BUDGET), 54.7, 25.3},
	{"faroe-islands", "Faroe Islands", "FO", "Northern Europe", 160, B(T_NATURE) | B(T_ISLAND) | B(T_ADVENTURE), 62.0, -6.8},
	{"cappadocia", "Cappadocia", "TR", "Middle East", 90, B(T_ADVENTURE) | B(T_NATURE) | B(T_ROMANTIC) | B(T_HISTORY), 38.6, 34.8},
	{"antalya", "Antalya", "TR", "Middle East", 85, B(T_BEACH) | B(T_FAMILY) | B(T_BUDGET), 36.9, 30.7},
	{"bodrum", "Bodrum", "TR", "Middle East", 110, B(T_BEACH) | B(T_NIGHT), 37.0, 27.4},
	{"abu-dhabi", "Abu Dhabi", "AE", "Middle East", 200, B(T_CITY) | B(T_CULTURE) | B(T_FAMILY) | B(T_SHOPPING), 24.5, 54.4},
	{"doha", "Doha", "QA", "Middle East", 180, B(T_CITY) | B(T_SHOPPING) | B(T_CULTURE), 25.3, 51.5},
	{"petra", "Petra", "JO", "Middle East", 90, B(T_HISTORY) | B(T_ADVENTURE) | B(T_CULTURE), 30.3, 35.4},
	{"tel-aviv", "Tel Aviv", "IL", "Middle East", 190, B(T_BEACH) | B(T_CITY) | B(T_NIGHT) | B(T_FOOD), 32.1, 34.8},
	{"jerusalem", "Jerusalem", "IL", "Middle East", 150, B(T_HISTORY) | B(T_CULTURE), 31.8, 35.2},
	{"muscat", "Muscat", "OM", "Middle East", 150, B(T_CULTURE) | B(T_NATURE) | B(T_BEACH), 23.6, 58.4},
	{"fez", "Fez", "MA", "Africa", 60, B(T_CULTURE) | B(T_HISTORY) | B(T_SHOPPING) | B(T_BUDGET), 34.0, -5.0},
	{"agadir", "Agadir", "MA", "Africa", 70, B(T_BEACH) | B(T_FAMILY) | B(T_BUDGET), 30.4, -9.6},
	{"essaouira", "Essaouira", "MA", "Africa", 65, B(T_BEACH) | B(T_CULTURE) | B(T_ADVENTURE), 31.5, -9.8},
	{"cairo", "Cairo", "EG", "Africa", 70, B(T_HISTORY) | B(T_CULTURE) | B(T_CITY), 30.0, 31.2},
	{"luxor", "Luxor", "EG", "Africa", 75, B(T_HISTORY) | B(T_CULTURE), 25.7, 32.6},
	{"hurghada", "Hurghada", "EG", "Africa", 70, B(T_BEACH) | B(T_FAMILY) | B(T_BUDGET), 27.3, 33.8},
	{"sharm-el-sheikh", "Sharm el-Sheikh", "EG", "Africa", 80, B(T_BEACH) | B(T_ADVENTURE) | B(T_WELLNESS), 27.9, 34.3},
	{"djerba", "Djerba", "TN", "Africa", 60, B(T_BEACH) | B(T_ISLAND) | B(T_BUDGET) | B(T_FAMILY), 33.8, 10.9},
	{"zanzibar", "Zanzibar", "TZ", "Africa", 110, B(T_BEACH) | B(T_ISLAND) | B(T_ROMANTIC), -6.2, 39.2},
	{"serengeti", "Serengeti", "TZ", "Africa", 320, B(T_NATURE) | B(T_ADVENTURE), -2.3, 34.8},
	{"masai-mara", "Masai Mara", "KE", "Africa", 280, B(T_NATURE) | B(T_ADVENTURE), -1.5, 35.1},
	{"kruger", "Kruger Park", "ZA", "Africa", 220, B(T_NATURE) | B(T_ADVENTURE) | B(T_FAMILY), -24.0, 31.5},
	{"garden-route", "Garden Route", "ZA", "Africa", 120, B(T_NATURE) | B(T_BEACH) | B(T_ADVENTURE), -34.0, 22.5},
	{"victoria-falls", "Victoria Falls", "ZW", "Africa", 180, B(T_NATURE) | B(T_ADVENTURE), -17.9, 25.8},
	{"sossusvlei", "Sossusvlei", "NA", "Africa", 200, B(T_NATURE) | B(T_ADVENTURE), -24.7, 15.3},
	{"mauritius", "Mauritius", "MU", "Africa", 230, B(T_BEACH) | B(T_ISLAND) | B(T_ROMANTIC) | B(T_WELLNESS), -20.2, 57.5},
	{"seychelles", "Seychelles", "SC", "Africa", 330, B(T_BEACH) | B(T_ISLAND) | B(T_ROMANTIC), -4.6, 55.5},
	{"los-angeles", "Los Angeles", "US", "North America", 200, B(T_CITY) | B(T_BEACH) | B(T_SHOPPING), 34.1, -118.2},
	{"san-francisco", "San Francisco", "US", "North America", 220, B(T_CITY) | B(T_FOOD) | B(T_CULTURE), 37.8, -122.4},
	{"las-vegas", "Las Vegas", "US", "North America", 150, B(T_NIGHT) | B(T_SHOPPING) | B(T_CITY), 36.2, -115.2},
	{"miami", "Miami", "US", "North America", 210, B(T_BEACH) | B(T_NIGHT) | B(T_CITY), 25.8, -80.2},
	{"orlando", "Orlando", "US", "North America", 170, B(T_FAMILY) | B(T_SHOPPING), 28.5, -81.4},
	{"chicago", "Chicago", "US", "North America", 180, B(T_CITY) | B(T_CULTURE) | B(T_FOOD), 41.9, -87.6},
	{"new-orleans", "New Orleans", "US", "North America", 160, B(T_FOOD) | B(T_NIGHT) | B(T_CULTURE), 30.0, -90.1},
	{"washington", "Washington", "US", "North America", 190, B(T_CITY) | B(T_HISTORY) | B(T_CULTURE), 38.9, -77.0},
	{"boston", "Boston", "US", "North America", 200, B(T_CITY) | B(T_HISTORY), 42.4, -71.1},
	{"san-diego", "San Diego", "US", "North America", 180, B(T_BEACH) | B(T_FAMILY) | B(T_CITY), 32.7, -117.2},
	{"nashville", "Nashville", "US", "North America", 160, B(T_NIGHT) | B(T_FOOD) | B(T_CULTURE), 36.2, -86.8},
	{"grand-canyon", "Grand Canyon", "US", "North America", 140, B(T_NATURE) | B(T_ADVENTURE), 36.1, -112.1},
	{"yellowstone", "Yellowstone", "US", "North America", 150, B(T_NATURE) | B(T_FAMILY) | B(T_ADVENTURE), 44.4, -110.6},
	{"aspen", "Aspen", "US", "North America", 320, B(T_SKI) | B(T_MOUNTAINS) | B(T_WELLNESS), 39.2, -106.8},
	{"honolulu", "Honolulu", "US", "North America", 240, B(T_BEACH) | B(T_ISLAND) | B(T_FAMILY), 21.3, -157.9},
	{"maui", "Maui", "US", "North America", 280, B(T_BEACH) | B(T_ISLAND) | B(T_NATURE) | B(T_ROMANTIC), 20.8, -156.3},
	{"vancouver", "Vancouver", "CA", "North America", 170, B(T_CITY) | B(T_NATURE) | B(T_FOOD), 49.3, -123.1},
	{"whistler", "Whistler", "CA", "North America", 230, B(T_SKI) | B(T_MOUNTAINS) | B(T_ADVENTURE), 50.1, -122.9},
	{"toronto", "Toronto", "CA", "North America", 160, B(T_CITY) | B(T_CULTURE) | B(T_SHOPPING), 43.7, -79.4},
	{"montreal", "Montreal", "CA", "North America", 140, B(T_CITY) | B(T_FOOD) | B(T_CULTURE) | B(T_NIGHT), 45.5, -73.6},
	{"quebec-city", "Quebec City", "CA", "North America", 130, B(T_HISTORY) | B(T_ROMANTIC), 46.8, -71.2},
	{"niagara-falls", "Niagara Falls", "CA", "North America", 120, B(T_NATURE) | B(T_FAMILY), 43.1, -79.1},
	{"mexico-city", "Mexico City", "MX", "North America", 80, B(T_CITY) | B(T_CULTURE) | B(T_FOOD) | B(T_HISTORY), 19.4, -99.1},
	{"tulum", "Tulum", "MX", "North America", 160, B(T_BEACH) | B(T_WELLNESS) | B(T_HISTORY), 20.2, -87.5},
	{"oaxaca", "Oaxaca", "MX", "North America", 60, B(T_FOOD) | B(T_CULTURE) | B(T_BUDGET), 17.1, -96.7},
	{"playa-del-carmen", "Playa del Carmen", "MX", "North America", 120, B(T_BEACH) | B(T_NIGHT), 20.6, -87.1},
	{"los-cabos", "Los Cabos", "MX", "North America", 220, B(T_BEACH) | B(T_ROMANTIC) | B(T_ADVENTURE), 22.9, -109.9},
	{"havana", "Havana", "CU", "Caribbean", 70, B(T_CULTURE) | B(T_HISTORY) | B(T_NIGHT), 23.1, -82.4},
	{"varadero", "Varadero", "CU", "Caribbean", 90, B(T_BEACH) | B(T_FAMILY), 23.2, -81.2},
	{"punta-cana", "Punta Cana", "DO", "Caribbean", 130, B(T_BEACH) | B(T_FAMILY), 18.6, -68.4},
	{"montego-bay", "Montego Bay", "JM", "Caribbean", 150, B(T_BEACH) | B(T_NIGHT), 18.5, -77.9},
	{"barbados", "Barbados", "BB", "Caribbean", 220, B(T_BEACH) | B(T_ISLAND) | B(T_ROMANTIC), 13.2, -59.5},
	{"nassau", "Nassau", "BS", "Caribbean", 230, B(T_BEACH) | B(T_ISLAND) | B(T_FAMILY), 25.0, -77.3},
	{"aruba", "Aruba", "AW", "Caribbean", 210, B(T_BEACH) | B(T_ISLAND) | B(T_FAMILY), 12.5, -70.0},
	{"st-lucia", "St. Lucia", "LC", "Caribbean", 250, B(T_BEACH) | B(T_ISLAND) | B(T_ROMANTIC) | B(T_NATURE), 13.9, -61.0},
	{"san-juan", "San Juan", "PR", "Caribbean", 160, B(T_BEACH) | B(T_CITY) | B(T_HISTORY), 18.5, -66.1},
	{"guadeloupe", "Guadeloupe", "GP", "Caribbean", 150, B(T_BEACH) | B(T_ISLAND) | B(T_NATURE), 16.2, -61.5},
	{"martinique", "Martinique", "MQ", "Caribbean", 150, B(T_BEACH) | B(T_ISLAND) | B(T_FOOD), 14.6, -61.0},
	{"arenal", "Arenal", "CR", "Central America", 120, B(T_NATURE) | B(T_ADVENTURE) | B(T_WELLNESS), 10.5, -84.7},
	{"manuel-antonio", "Manuel Antonio", "CR", "Central America", 130, B(T_BEACH) | B(T_NATURE) | B(T_FAMILY), 9.4, -84.1},
	{"antigua-guatemala", "Antigua", "GT", "Central America", 60, B(T_HISTORY) | B(T_CULTURE) | B(T_BUDGET), 14.6, -90.7},
	{"ambergris-caye", "Ambergris Caye", "BZ", "Central America", 150, B(T_BEACH) | B(T_ISLAND) | B(T_ADVENTURE), 17.9, -88.0},
	{"panama-city", "Panama City", "PA", "Central America", 110, B(T_CITY) | B(T_SHOPPING), 9.0, -79.5},
	{"rio-de-janeiro", "Rio de Janeiro", "BR", "South America", 110, B(T_BEACH) | B(T_CITY) | B(T_NIGHT), -22.9, -43.2},
	{"sao-paulo", "Sao Paulo", "BR", "South America", 100, B(T_CITY) | B(T_FOOD) | B(T_SHOPPING), -23.6, -46.6},
	{"florianopolis", "Florianopolis", "BR", "South America", 90, B(T_BEACH) | B(T_ISLAND) | B(T_NIGHT), -27.6, -48.5},
	{"salvador", "Salvador", "BR", "South America", 80, B(T_BEACH) | B(T_CULTURE) | B(T_HISTORY), -13.0, -38.5},
	{"iguazu", "Iguazu Falls", "AR", "South America", 100, B(T_NATURE) | B(T_ADVENTURE), -25.7, -54.4},
	{"buenos-aires", "Buenos Aires", "AR", "South America", 80, B(T_CITY) | B(T_FOOD) | B(T_NIGHT) | B(T_CULTURE), -34.6, -58.4},
	{"el-calafate", "El Calafate", "AR", "South America", 140, B(T_NATURE) | B(T_ADVENTURE) | B(T_MOUNTAINS), -50.3, -72.3},
	{"bariloche", "Bariloche", "AR", "South America", 110, B(T_SKI) | B(T_MOUNTAINS) | B(T_NATURE), -41.1, -71.3},
	{"mendoza", "Mendoza", "AR", "South America", 90, B(T_FOOD) | B(T_ROMANTIC) | B(T_NATURE), -32.9, -68.8},
	{"santiago", "Santiago", "CL", "South America", 100, B(T_CITY) | B(T_FOOD) | B(T_MOUNTAINS), -33.4, -70.7},
	{"atacama", "San Pedro de Atacama", "CL", "South America", 120, B(T_NATURE) | B(T_ADVENTURE), -22.9, -68.2},
	{"torres-del-paine", "Torres del Paine", "CL", "South America", 180, B(T_NATURE) | B(T_ADVENTURE) | B(T_MOUNTAINS), -51.0, -73.0},
	{"cusco", "Cusco", "PE", "South America", 70, B(T_HISTORY) | B(T_CULTURE) | B(T_ADVENTURE), -13.5, -72.0},
	{"machu-picchu", "Machu Picchu", "PE", "South America", 150, B(T_HISTORY) | B(T_ADVENTURE) | B(T_MOUNTAINS), -13.2, -72.5},
	{"lima", "Lima", "PE", "South America", 85, B(T_FOOD) | B(T_CITY) | B(T_CULTURE), -12.0, -77.0},
	{"cartagena", "Cartagena", "CO", "South America", 90, B(T_BEACH) | B(T_HISTORY) | B(T_ROMANTIC), 10.4, -75.5},
	{"medellin", "Medellin", "CO", "South America", 60, B(T_CITY) | B(T_NIGHT) | B(T_BUDGET), 6.2, -75.6},
	{"galapagos", "Galapagos", "EC", "South America", 300, B(T_NATURE) | B(T_ISLAND) | B(T_ADVENTURE), -0.7, -90.3},
	{"uyuni", "Uyuni", "BO", "South America", 70, B(T_NATURE) | B(T_ADVENTURE) | B(T_BUDGET), -20.5, -66.8},
	{"osaka", "Osaka", "JP", "East Asia", 120, B(T_FOOD) | B(T_CITY) | B(T_NIGHT) | B(T_SHOPPING), 34.7, 135.5},
	{"niseko", "Niseko", "JP", "East Asia", 200, B(T_SKI) | B(T_MOUNTAINS) | B(T_WELLNESS), 42.8, 140.7},
	{"okinawa", "Okinawa", "JP", "East Asia", 140, B(T_BEACH) | B(T_ISLAND) | B(T_FAMILY), 26.3, 127.8},
	{"hiroshima", "Hiroshima", "JP", "East Asia", 100, B(T_HISTORY) | B(T_CULTURE), 34.4, 132.5},
	{"hakone", "Hakone", "JP", "East Asia", 170, B(T_WELLNESS) | B(T_NATURE) | B(T_ROMANTIC), 35.2, 139.0},
	{"sapporo", "Sapporo", "JP", "East Asia", 110, B(T_FOOD) | B(T_SKI) | B(T_CITY), 43.1, 141.4},
	{"seoul", "Seoul", "KR", "East Asia", 120, B(T_CITY) | B(T_SHOPPING) | B(T_FOOD) | B(T_NIGHT), 37.6, 127.0},
	{"busan", "Busan", "KR", "East Asia", 100, B(T_BEACH) | B(T_FOOD) | B(T_CITY), 35.2, 129.1},
	{"jeju", "Jeju", "KR", "East Asia", 110, B(T_ISLAND) | B(T_NATURE) | B(T_BEACH), 33.5, 126.5},
	{"beijing", "Beijing", "CN", "East Asia", 100, B(T_HISTORY) | B(T_CULTURE) | B(T_CITY), 39.9, 116.4},
	{"shanghai", "Shanghai", "CN", "East Asia", 120, B(T_CITY) | B(T_SHOPPING) | B(T_FOOD) | B(T_NIGHT), 31.2, 121.5},
	{"xian", "Xi'an", "CN", "East Asia", 70, B(T_HISTORY) | B(T_CULTURE) | B(T_BUDGET), 34.3, 108.9},
	{"guilin", "Guilin", "CN", "East Asia", 70, B(T_NATURE) | B(T_ADVENTURE) | B(T_BUDGET), 25.3, 110.3},
	{"hong-kong", "Hong Kong", "HK", "East Asia", 170, B(T_CITY) | B(T_SHOPPING) | B(T_FOOD) | B(T_NIGHT), 22.3, 114.2},
	{"taipei", "Taipei", "TW", "East Asia", 100, B(T_FOOD) | B(T_CITY) | B(T_CULTURE), 25.0, 121.6},
	{"phuket", "Phuket", "TH", "Southeast Asia", 90, B(T_BEACH) | B(T_ISLAND) | B(T_NIGHT), 7.9, 98.4},
	{"chiang-mai", "Chiang Mai", "TH", "Southeast Asia", 50, B(T_CULTURE) | B(T_NATURE) | B(T_BUDGET) | B(T_WELLNESS), 18.8, 99.0},
	{"krabi", "Krabi", "TH", "Southeast Asia", 75, B(T_BEACH) | B(T_ADVENTURE) | B(T_NATURE), 8.1, 98.9},
	{"koh-samui", "Koh Samui", "TH", "Southeast Asia", 110, B(T_BEACH) | B(T_ISLAND) | B(T_WELLNESS) | B(T_ROMANTIC), 9.5, 100.0},
	{"singapore", "Singapore", "SG", "Southeast Asia", 200, B(T_CITY) | B(T_FOOD) | B(T_SHOPPING) | B(T_FAMILY), 1.35, 103.8},
	{"kuala-lumpur", "Kuala Lumpur", "MY", "Southeast Asia", 70, B(T_CITY) | B(T_SHOPPING) | B(T_FOOD) | B(T_BUDGET), 3.1, 101.7},
	{"langkawi", "Langkawi", "MY", "Southeast Asia", 90, B(T_BEACH) | B(T_ISLAND) | B(T_NATURE), 6.35, 99.8},
	{"hanoi", "Hanoi", "VN", "Southeast Asia", 45, B(T_CITY) | B(T_FOOD) | B(T_HISTORY) | B(T_BUDGET), 21.0, 105.8},
	{"ha-long-bay", "Ha Long Bay", "VN", "Southeast Asia", 90, B(T_NATURE) | B(T_ADVENTURE) | B(T_ROMANTIC), 20.9, 107.1},
	{"ho-chi-minh-city", "Ho Chi Minh City", "VN", "Southeast Asia", 50, B(T_CITY) | B(T_FOOD) | B(T_NIGHT) | B(T_BUDGET), 10.8, 106.7},
	{"hoi-an", "Hoi An", "VN", "Southeast Asia", 50, B(T_HISTORY) | B(T_CULTURE) | B(T_FOOD) | B(T_BUDGET), 15.9, 108.3},
	{"siem-reap", "Siem Reap", "KH", "Southeast Asia", 45, B(T_HISTORY) | B(T_CULTURE) | B(T_BUDGET), 13.4, 103.9},
	{"luang-prabang", "Luang Prabang", "LA", "Southeast Asia", 50, B(T_CULTURE) | B(T_NATURE) | B(T_BUDGET), 19.9, 102.1},
	{"palawan", "Palawan", "PH", "Southeast Asia", 90, B(T_BEACH) | B(T_ISLAND) | B(T_NATURE) | B(T_ADVENTURE), 9.8, 118.7},
	{"boracay", "Boracay", "PH", "Southeast Asia", 100, B(T_BEACH) | B(T_ISLAND) | B(T_NIGHT), 12.0, 121.9},
	{"lombok", "Lombok", "ID", "Southeast Asia", 70, B(T_BEACH) | B(T_ISLAND) | B(T_ADVENTURE) | B(T_BUDGET), -8.65, 116.3},
	{"yogyakarta", "Yogyakarta", "ID", "Southeast Asia", 45, B(T_CULTURE) | B(T_HISTORY) | B(T_BUDGET), -7.8, 110.4},
	{"goa", "Goa", "IN", "South Asia", 60, B(T_BEACH) | B(T_NIGHT) | B(T_BUDGET), 15.3, 74.1},
	{"jaipur", "Jaipur", "IN", "South Asia", 60, B(T_HISTORY) | B(T_CULTURE) | B(T_SHOPPING) | B(T_BUDGET), 26.9, 75.8},
	{"agra", "Agra", "IN", "South Asia", 65, B(T_HISTORY) | B(T_CULTURE), 27.2, 78.0},
	{"kerala", "Kerala", "IN", "South Asia", 70, B(T_NATURE) | B(T_WELLNESS) | B(T_BEACH), 9.5, 76.3},
	{"mumbai", "Mumbai", "IN", "South Asia", 90, B(T_CITY) | B(T_FOOD) | B(T_SHOPPING), 19.1, 72.9},
	{"delhi", "Delhi", "IN", "South Asia", 70, B(T_CITY) | B(T_HISTORY) | B(T_FOOD), 28.6, 77.2},
	{"galle", "Galle", "LK", "South Asia", 80, B(T_BEACH) | B(T_HISTORY) | B(T_CULTURE), 6.0, 80.2},
	{"kandy", "Kandy", "LK", "South Asia", 60, B(T_CULTURE) | B(T_NATURE), 7.3, 80.6},
	{"kathmandu", "Kathmandu", "NP", "South Asia", 40, B(T_CULTURE) | B(T_MOUNTAINS) | B(T_ADVENTURE) | B(T_BUDGET), 27.7, 85.3},
	{"pokhara", "Pokhara", "NP", "South Asia", 40, B(T_MOUNTAINS) | B(T_ADVENTURE) | B(T_NATURE) | B(T_BUDGET), 28.2, 84.0},
	{"melbourne", "Melbourne", "AU", "Oceania", 170, B(T_CITY) | B(T_FOOD) | B(T_CULTURE), -37.8, 145.0},
	{"cairns", "Cairns", "AU", "Oceania", 160, B(T_BEACH) | B(T_NATURE) | B(T_ADVENTURE), -16.9, 145.8},
	{"gold-coast", "Gold Coast", "AU", "Oceania", 150, B(T_BEACH) | B(T_FAMILY) | B(T_NIGHT), -28.0, 153.4},
	{"uluru", "Uluru", "AU", "Oceania", 220, B(T_NATURE) | B(T_ADVENTURE), -25.3, 131.0},
	{"perth", "Perth", "AU", "Oceania", 150, B(T_CITY) | B(T_BEACH), -31.95, 115.9},
	{"hobart", "Hobart", "AU", "Oceania", 140, B(T_NATURE) | B(T_FOOD), -42.9, 147.3},
	{"auckland", "Auckland", "NZ", "Oceania", 150, B(T_CITY) | B(T_NATURE), -36.85, 174.8},
	{"rotorua", "Rotorua", "NZ", "Oceania", 120, B(T_WELLNESS) | B(T_NATURE) | B(T_CULTURE), -38.1, 176.2},
	{"fiji", "Fiji", "FJ", "Oceania", 230, B(T_BEACH) | B(T_ISLAND) | B(T_ROMANTIC) | B(T_FAMILY), -17.7, 177.4},
	{"bora-bora", "Bora Bora", "PF", "Oceania", 450, B(T_BEACH) | B(T_ISLAND) | B(T_ROMANTIC) | B(T_WELLNESS), -16.5, -151.7},
};
#define NDESTS ((int)SX_ARRAY_SIZE(dests))

/* What one can book at a destination: a kind is offered where the destination
 * carries one of its tags (a kind with no tag anywhere), and the activity
 * carries the tags the two share. Price: a share of a night's price there. */
struct act_kind {
	const char *name;
	unsigned tags;
	double price;
};

static const struct act_kind act_kinds[] = {
	{"food tour", B(T_FOOD), 0.5},
	{"cooking class", B(T_FOOD) | B(T_CULTURE), 0.6},
	{"wine tasting", B(T_FOOD) | B(T_ROMANTIC), 0.5},
	{"street food walk", B(T_FOOD) | B(T_BUDGET), 0.25},
	{"market visit", B(T_FOOD) | B(T_SHOPPING) | B(T_CULTURE), 0.15},
	{"guided walk", B(T_CITY) | B(T_HISTORY) | B(T_CULTURE), 0.25},
	{"free walking tour", B(T_CITY) | B(T_BUDGET), 0.05},
	{"museum pass", B(T_CULTURE) | B(T_CITY), 0.35},
	{"historic sites tour", B(T_HISTORY), 0.4},
	{"photo tour", B(T_CULTURE) | B(T_ROMANTIC), 0.4},
	{"bike tour", B(T_CITY) | B(T_NATURE), 0.3},
	{"bar crawl", B(T_NIGHT) | B(T_BUDGET), 0.3},
	{"club night", B(T_NIGHT), 0.4},
	{"boat trip", B(T_BEACH) | B(T_ISLAND), 0.5},
	{"snorkelling trip", B(T_BEACH) | B(T_ISLAND) | B(T_ADVENTURE), 0.6},
	{"surf lesson", B(T_BEACH) | B(T_ADVENTURE), 0.5},
	{"sunset cruise", B(T_ROMANTIC) | B(T_BEACH) | B(T_ISLAND), 0.6},
	{"romantic dinner", B(T_ROMANTIC) | B(T_FOOD), 0.8},
	{"hiking day", B(T_NATURE) | B(T_MOUNTAINS), 0.3},
	{"kayak tour", B(T_NATURE) | B(T_ADVENTURE), 0.45},
	{"wildlife tour", B(T_NATURE) | B(T_FAMILY), 0.6},
	{"paragliding", B(T_ADVENTURE) | B(T_MOUNTAINS), 0.9},
	{"ski pass", B(T_SKI), 0.4},
	{"ski school", B(T_SKI) | B(T_FAMILY), 0.6},
	{"spa day", B(T_WELLNESS), 0.7},
	{"yoga class", B(T_WELLNESS) | B(T_NATURE), 0.25},
	{"shopping tour", B(T_SHOPPING), 0.3},
	{"family day out", B(T_FAMILY), 0.6},
	{"day trip", 0, 0.6},
};
#define NKINDS ((int)SX_ARRAY_SIZE(act_kinds))
#define ACTS_MIN 5 /* per destination, if that many kinds fit it */
#define ACTS_MAX 9
#define NOFFERS (NDESTS / 2)
#define NTRIPS (NDESTS * 2 / 3)

struct wchoice {
	const char *name;
	double w;
};

static unsigned act_tags(const struct dest *x, int kind)
{
	return act_kinds[kind].tags ? act_kinds[kind].tags & x->tags : x->tags;
}

static const struct wchoice countries[] = {
	{"DE", 18}, {"GB", 15}, {"FR", 14}, {"US", 12}, {"ES", 8}, {"IT", 8}, {"NL", 6},
	{"SE", 4}, {"PL", 4}, {"CH", 3}, {"BR", 3}, {"JP", 3}, {"CA", 2},
};
#define NCOUNTRIES ((int)SX_ARRAY_SIZE(countries))
/* where a country's travellers start from (its population's centre, roughly) */
static const double country_pos[NCOUNTRIES][2] = {
	{51.0, 10.0}, {52.5, -1.5}, {46.8, 2.4}, {39.0, -85.0}, {40.4, -3.7}, {42.5, 12.5}, {52.2, 5.3},
	{59.3, 18.0}, {52.0, 19.5}, {46.8, 8.2}, {-15.8, -47.9}, {35.7, 139.7}, {45.4, -75.7},
};
/* How often each tag is someone's interest: sun and cities lead, as in
 * travel surveys; niche tags (ski, wellness, shopping) are a few percent. */
static const double tag_share[NTAGS] = {14, 14, 10, 8, 5, 9, 5, 7, 6, 6, 8, 5, 6, 4, 4, 5};
static const struct wchoice devices[] = {{"mobile", 58}, {"desktop", 34}, {"tablet", 8}};
static const double device_conv[] = {0.8, 1.45, 1.0}; /* booking propensity by device */
static const double hour_w[24] = {1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 3.5, 3.5,
				  4, 3.8, 3.5, 3.5, 3.8, 4.2, 5, 6, 6.5, 6, 4.5, 2.5};
static const double weekday_w[7] = {1.0, 0.95, 0.95, 1.0, 1.1, 1.25, 1.3}; /* Monday first */

/* ---- random streams ---- */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

struct rng {
	uint64_t s;
};

static void rng_seed(struct rng *r, uint64_t seed, uint64_t a, uint64_t b, uint64_t c)
{
	r->s = mix64(mix64(mix64(mix64(seed) ^ a) ^ b) ^ c);
}

static uint64_t rng_next(struct rng *r)
{
	r->s += 0x9e3779b97f4a7c15ULL;
	uint64_t z = r->s;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double rng_unif(struct rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

static double rng_normal(struct rng *r)
{
	double u = rng_unif(r), v = rng_unif(r);
	return sqrt(-2.0 * log(u > 0 ? u : 1e-300)) * cos(2 * M_PI * v);
}

static int rng_pick(struct rng *r, const double *w, int n, double total)
{
	double x = rng_unif(r) * total;
	for (int i = 0; i < n; i++) {
		if (x < w[i])
			return i;
		x -= w[i];
	}
	return n - 1;
}

static int pick_choice(struct rng *r, const struct wchoice *c, int n)
{
	double w[16], t = 0;
	for (int i = 0; i < n; i++)
		t += w[i] = c[i].w;
	return rng_pick(r, w, n, t);
}

enum { S_USER = 1, S_DAY, S_SESSION, S_ITEMS };

/* ---- travellers ----
 *
 * Travel is personal, so each user's taste is drawn once, at creation, from
 * (seed, user), and stays:
 * - home: the country's position. A destination's distance weight is
 *   (1 + d / 1000 km)^-1.3, doubled in the home country: a gravity model in
 *   which domestic and nearby trips dominate and long haul is a few percent
 *   of a European's views (as in Eurostat's trip statistics).
 * - budget: a comfortable price per night and traveller, lognormal with median
 *   120 EUR and sigma 0.4 (5-95 %: 62-232 EUR). Dearer places fade fast (a
 *   normal in log price with sigma 0.35 above the budget), cheaper ones slowly
 *   (0.9 below), and none falls under 0.1: people look at places they will
 *   not book.
 * - interests: 1 (40 %), 2 (40 %) or 3 (20 %) distinct tags drawn by
 *   tag_share, weighted 1, 0.6, 0.4.
 * - season sensitivity: the exponent on a destination's season curve,
 *   lognormal around 1 (sigma 0.4): some travel when the beach is warm,
 *   others whenever.
 * A session is coherent: one tag (one of the interests by weight 75 % of the
 * time, else any tag by tag_share: inspiration), and in 35 % of sessions also
 * a region, drawn among those with the tag by the user's weights below; each
 * search carries `query` (the tag) and `region`. Views are drawn by
 * popularity x season^sensitivity x distance x budget x interests
 * (1 + 0.5 x the weights of the interests the destination carries) x focus
 * (x0.08 off the session's tag, x0.1 off its region). A session's first view
 * goes back to the destination the user viewed last with probability 0.3
 * (people return to what they consider); each later view leans towards
 * destinations like the one before (x (1 + its share of the tags they share
 * + 1 in the same region)) and never repeats it. After 30 % of destination
 * views comes a view of one of its activities, by the user's interests
 * (1 + 2 x the weights of the interests among the activity's tags). Popularity stays the Zipf
 * law below, so the marginal counts keep their power law, and the funnel's
 * rates are the old ones. */

#define NO_DEST 0xffff

struct demo_user {
	int32_t signup_day; /* relative to the first day; negative: before the window */
	float rate;         /* sessions per day while engaged */
	float lifetime;     /* days of engagement after signup */
	float budget;       /* EUR per night and traveller */
	float season;       /* exponent on the season curve */
	uint8_t country, device, ninterests;
	uint8_t interest[3];
	uint16_t last;      /* the destination viewed last; NO_DEST */
};

static const double interest_w[3] = {1, 0.6, 0.4};

struct demo {
	uv_timer_t timer;
	struct sx_req *req; /* NULL for the load at start */
	uint64_t failed0;   /* sx_store_failed_batches at the start */
	uint64_t seed;
	uint32_t nusers, ndays;
	int64_t from, to; /* [from, to): the days covered */
	int phase;        /* 0 items, 1 users, 2 days, 3 done */
	uint32_t next_user, day;
	struct demo_user *users;
	double pop[NDESTS]; /* power-law popularity, seeded order */
	double logseason[NDESTS]; /* log of today's season factor */
	double logprice[NDESTS];
	double logbase[NCOUNTRIES][NDESTS]; /* log(popularity x distance weight) by home country */
	int nregions;
	const char *regions[NDESTS];
	uint8_t dest_region[NDESTS];
	uint8_t nacts[NDESTS], acts[NDESTS][ACTS_MAX]; /* each destination's activity kinds */
	uint64_t events, items, rejected;
	uint64_t started_ms;
	msgpack_sbuffer sb;
	msgpack_zone zone;
};

static struct demo *running;

static double season(unsigned tags, double doy)
{
	double a = 2 * M_PI / 365.2425;
	if (tags & (B(T_BEACH) | B(T_ISLAND)))
		return 1 + 0.7 * cos(a * (doy - 196));
	if (tags & B(T_SKI))
		return 1 + 0.8 * cos(a * (doy - 35));
	return 1 + 0.15 * cos(a * (doy - 140));
}

static double distance_km(double lat1, double lon1, double lat2, double lon2)
{
	double r = M_PI / 180, a = sin((lat2 - lat1) * r / 2), b = sin((lon2 - lon1) * r / 2);
	double h = a * a + cos(lat1 * r) * cos(lat2 * r) * b * b;
	return 2 * 6371 * asin(sqrt(fmin(1, h)));
}

static double doy_of(int64_t t)
{
	return fmod((double)sx__ev_floor(t, SX_EV_DAY_MS) / SX_EV_DAY_MS, 365.2425);
}

static void vector_of(unsigned tags, uint64_t seed, const char *key, float *v)
{
	struct rng r;
	double n = 0;
	rng_seed(&r, seed, S_ITEMS, (uint64_t)strlen(key), (uint64_t)key[0] << 8 | (uint8_t)key[1]);
	for (int i = 0; i < NTAGS; i++) {
		double x = (tags & (1u << i) ? 1.0 : 0.0) + 0.05 * rng_normal(&r);
		v[i] = (float)x;
		n += x * x;
	}
	n = sqrt(n);
	for (int i = 0; i < NTAGS; i++)
		v[i] = (float)(v[i] / (n > 0 ? n : 1));
}

static void pack_tags(msgpack_packer *pk, unsigned tags)
{
	int n = 0;
	for (int i = 0; i < NTAGS; i++)
		n += !!(tags & (1u << i));
	msgpack_pack_array(pk, (size_t)n);
	for (int i = 0; i < NTAGS; i++)
		if (tags & (1u << i))
			sx_pack_str(pk, tag_names[i]);
}

/* Packs one map with pk into d->sb, unpacks it into d->zone: the object to store. */
static int as_object(struct demo *d, msgpack_object *o)
{
	return sx__ev_unpack(d->sb.data, d->sb.size, &d->zone, o);
}

static int put_item(struct demo *d, const char *id, int kind, const float *vec)
{
	msgpack_object o;
	int rc = as_object(d, &o);
	if (rc == 0)
		rc = sx__ev_item_put(id, strlen(id), kind, &o, vec, vec ? NTAGS : 0);
	msgpack_sbuffer_clear(&d->sb);
	d->items += rc == 0;
	return rc;
}

static int set_dims(const char *event, const char *const *dims, int n)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t k[1 + SX_EVENTS_ID_MAX];
	size_t elen = strlen(event);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	sx_pack_key(&pk, "dimensions");
	msgpack_pack_array(&pk, (size_t)n);
	for (int i = 0; i < n; i++)
		sx_pack_str(&pk, dims[i]);
	sx_pack_kv_str(&pk, "value", "value");
	k[0] = 'D';
	memcpy(k + 1, event, elen);
	int rc = sx_store_put(sx__ev_eng->store, SX_T_COUNTERS, k, elen + 1, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static int shared_tags(unsigned a, unsigned b) { return __builtin_popcount(a & b); }

/* Each destination's activities, best-fitting kinds first; they depend on the
 * destination only, so act:<key>:<n> names the same activity whatever the seed. */
static void plan_activities(struct demo *d)
{
	for (int i = 0; i < NDESTS; i++) {
		uint64_t h = 1469598103934665603ULL;
		double score[NKINDS];
		for (const char *c = dests[i].key; *c; c++)
			h = (h ^ (uint8_t)*c) * 1099511628211ULL;
		int want = ACTS_MIN + (int)(mix64(h) % (ACTS_MAX - ACTS_MIN + 1)), n = 0;
		for (int k = 0; k < NKINDS; k++) {
			int shared = shared_tags(act_kinds[k].tags, dests[i].tags);
			double jitter = (double)(mix64(h ^ (uint64_t)(k + 1)) >> 11) * 0x1.0p-53;
			score[k] = act_kinds[k].tags == 0 ? 0.5 + jitter : shared > 0 ? shared + jitter : -1;
		}
		while (n < want) {
			int best = -1;
			for (int k = 0; k < NKINDS; k++)
				if (score[k] >= 0 && (best < 0 || score[k] > score[best]))
					best = k;
			if (best < 0)
				break;
			d->acts[i][n++] = (uint8_t)best;
			score[best] = -1;
		}
		d->nacts[i] = (uint8_t)n;
	}
}

static int phase_items(struct demo *d)
{
	static const char *const search_dims[] = {"device", "query"};
	static const char *const view_dims[] = {"device", "item.country", "item.name", "item.region"};
	static const char *const trip_dims[] = {"device", "item.name"};
	static const char *const book_dims[] = {"device", "item.country", "item.name", "item.region", "user.country"};
	static const char *const signup_dims[] = {"device", "user.country"};
	msgpack_packer pk;
	float vec[NTAGS];
	char id[96];
	int rc;
	if ((rc = set_dims("search", search_dims, 2)) < 0 || (rc = set_dims("view", view_dims, 4)) < 0 ||
	    (rc = set_dims("create_trip", trip_dims, 2)) < 0 || (rc = set_dims("book", book_dims, 5)) < 0 ||
	    (rc = set_dims("signup", signup_dims, 2)) < 0)
		return rc;
	msgpack_packer_init(&pk, &d->sb, msgpack_sbuffer_write);
	msgpack_sbuffer_clear(&d->sb);
	for (int i = 0; i < NDESTS; i++) {
		const struct dest *x = &dests[i];
		msgpack_pack_map(&pk, 6);
		sx_pack_kv_str(&pk, "name", x->name);
		sx_pack_kv_str(&pk, "country", x->country);
		sx_pack_kv_str(&pk, "region", x->region);
		sx_pack_kv_double(&pk, "price", x->price);
		sx_pack_key(&pk, "tags");
		pack_tags(&pk, x->tags);
		sx_pack_kv_double(&pk, "popularity", d->pop[i]);
		vector_of(x->tags, d->seed, x->key, vec);
		snprintf(id, sizeof(id), "dest:%s", x->key);
		if ((rc = put_item(d, id, SX_ITEM_DESTINATION, vec)) < 0)
			return rc;
		for (int a = 0; a < d->nacts[i]; a++) {
			int k = d->acts[i][a];
			char name[96], aid[96];
			snprintf(name, sizeof(name), "%s %s", x->name, act_kinds[k].name);
			msgpack_pack_map(&pk, 7);
			sx_pack_kv_str(&pk, "name", name);
			sx_pack_kv_str(&pk, "kind", act_kinds[k].name);
			sx_pack_kv_str(&pk, "destination", id);
			sx_pack_kv_str(&pk, "country", x->country);
			sx_pack_kv_str(&pk, "region", x->region);
			sx_pack_kv_double(&pk, "price", fmax(5, round(x->price * act_kinds[k].price)));
			sx_pack_key(&pk, "tags");
			pack_tags(&pk, act_tags(x, k));
			snprintf(aid, sizeof(aid), "act:%s:%d", x->key, a + 1);
			vector_of(act_tags(x, k), d->seed + (uint64_t)k + 1, x->key, vec);
			if ((rc = put_item(d, aid, SX_ITEM_ACTIVITY, vec)) < 0)
				return rc;
		}
	}
	struct rng r;
	rng_seed(&r, d->seed, S_ITEMS, 1, 0);
	for (int i = 0; i < NOFFERS; i++) {
		const struct dest *x = &dests[rng_next(&r) % NDESTS];
		double disc = 0.1 + 0.05 * (double)(rng_next(&r) % 6);
		int64_t vf = d->from + (int64_t)(rng_next(&r) % (d->ndays + 1)) * SX_EV_DAY_MS;
		char dest[64];
		snprintf(dest, sizeof(dest), "dest:%s", x->key);
		msgpack_pack_map(&pk, 8);
		sx_pack_kv_str(&pk, "destination", dest);
		sx_pack_kv_str(&pk, "country", x->country);
		sx_pack_kv_str(&pk, "region", x->region);
		sx_pack_kv_double(&pk, "discount", disc);
		sx_pack_kv_double(&pk, "price", round(x->price * 5 * (1 - disc)));
		sx_pack_kv_int(&pk, "valid_from", vf);
		sx_pack_kv_int(&pk, "valid_to", vf + 30 * SX_EV_DAY_MS);
		sx_pack_key(&pk, "tags");
		pack_tags(&pk, x->tags);
		vector_of(x->tags, d->seed + 100, x->key, vec);
		snprintf(id, sizeof(id), "offer:%03d", i + 1);
		if ((rc = put_item(d, id, SX_ITEM_OFFER, vec)) < 0)
			return rc;
	}
	for (int i = 0; i < NTRIPS; i++) {
		/* two stops in one region, as a tour is sold */
		int a = (int)(rng_next(&r) % NDESTS), b, nb = 0, others[NDESTS];
		for (int j = 0; j < NDESTS; j++)
			if (j != a && d->dest_region[j] == d->dest_region[a])
				others[nb++] = j;
		b = nb ? others[rng_next(&r) % (uint64_t)nb] : a;
		int nights = 3 + (int)(rng_next(&r) % 12);
		char name[160], da[64], db[64];
		snprintf(name, sizeof(name), "%d nights: %s and %s", nights, dests[a].name, dests[b].name);
		snprintf(da, sizeof(da), "dest:%s", dests[a].key);
		snprintf(db, sizeof(db), "dest:%s", dests[b].key);
		msgpack_pack_map(&pk, 5);
		sx_pack_kv_str(&pk, "name", name);
		sx_pack_key(&pk, "destinations");
		msgpack_pack_array(&pk, 2);
		sx_pack_str(&pk, da);
		sx_pack_str(&pk, db);
		sx_pack_kv_int(&pk, "nights", nights);
		sx_pack_kv_double(&pk, "price", round((dests[a].price + dests[b].price) / 2 * nights));
		sx_pack_key(&pk, "tags");
		pack_tags(&pk, dests[a].tags | dests[b].tags);
		vector_of(dests[a].tags | dests[b].tags, d->seed + 200, dests[a].key, vec);
		snprintf(id, sizeof(id), "trip:%03d", i + 1);
		if ((rc = put_item(d, id, SX_ITEM_TRIP, vec)) < 0)
			return rc;
	}
	return 0;
}

static void user_draw(struct demo *d, uint32_t u, struct demo_user *du)
{
	struct rng r;
	double cw[16], ct = 0, tw[NTAGS];
	rng_seed(&r, d->seed, S_USER, u, 0);
	if (rng_unif(&r) < 0.25)
		du->signup_day = -1 - (int32_t)(rng_unif(&r) * d->ndays);
	else
		du->signup_day = (int32_t)(sqrt(rng_unif(&r)) * d->ndays); /* growth: more sign up later */
	if (du->signup_day >= (int32_t)d->ndays)
		du->signup_day = (int32_t)d->ndays - 1;
	du->rate = (float)fmin(3.0, exp(log(0.25) + 0.9 * rng_normal(&r)));
	du->lifetime = (float)(-21.0 * log(1 - rng_unif(&r)));
	for (int i = 0; i < NCOUNTRIES; i++)
		ct += cw[i] = countries[i].w;
	du->country = (uint8_t)rng_pick(&r, cw, NCOUNTRIES, ct);
	du->device = (uint8_t)pick_choice(&r, devices, (int)SX_ARRAY_SIZE(devices));
	double x = rng_unif(&r);
	du->ninterests = x < 0.4 ? 1 : x < 0.8 ? 2 : 3;
	memcpy(tw, tag_share, sizeof(tw));
	for (int i = 0; i < du->ninterests; i++) {
		double t = 0;
		for (int j = 0; j < NTAGS; j++)
			t += tw[j];
		du->interest[i] = (uint8_t)rng_pick(&r, tw, NTAGS, t);
		tw[du->interest[i]] = 0; /* distinct */
	}
	du->budget = (float)(120.0 * exp(0.4 * rng_normal(&r)));
	du->season = (float)exp(0.4 * rng_normal(&r));
	du->last = NO_DEST;
}

static void user_id(uint32_t u, char *buf, size_t size) { snprintf(buf, size, "u%07u", u); }

static int phase_users(struct demo *d)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, &d->sb, msgpack_sbuffer_write);
	uint32_t end = d->next_user + CHUNK_USERS < d->nusers ? d->next_user + CHUNK_USERS : d->nusers;
	for (; d->next_user < end; d->next_user++) {
		struct demo_user *du = &d->users[d->next_user];
		char id[32];
		uint32_t idx;
		int created, rc;
		msgpack_object o;
		user_draw(d, d->next_user, du);
		msgpack_sbuffer_clear(&d->sb);
		msgpack_pack_map(&pk, 5);
		sx_pack_kv_str(&pk, "country", countries[du->country].name);
		sx_pack_kv_str(&pk, "device", devices[du->device].name);
		sx_pack_kv_str(&pk, "interest", tag_names[du->interest[0]]);
		sx_pack_key(&pk, "interests");
		msgpack_pack_array(&pk, du->ninterests);
		for (int i = 0; i < du->ninterests; i++)
			sx_pack_str(&pk, tag_names[du->interest[i]]);
		sx_pack_kv_int(&pk, "budget", (int64_t)lround(du->budget));
		user_id(d->next_user, id, sizeof(id));
		if ((rc = as_object(d, &o)) < 0 ||
		    (rc = sx__ev_user_put(id, strlen(id), &o, d->from + (int64_t)du->signup_day * SX_EV_DAY_MS +
					  (int64_t)(mix64(d->seed ^ d->next_user) % SX_EV_DAY_MS), 1, &idx, &created)) < 0)
			return rc;
		msgpack_zone_clear(&d->zone);
	}
	msgpack_sbuffer_clear(&d->sb);
	return 0;
}

static void day_weights(struct demo *d, int64_t day_start)
{
	double doy = doy_of(day_start);
	for (int i = 0; i < NDESTS; i++)
		d->logseason[i] = log(season(dests[i].tags, doy));
}

/* The user's standing weights for the destinations today (before a session's focus). */
static void taste_weights(const struct demo *d, const struct demo_user *du, double *w)
{
	double lb = log(du->budget), floor_fit = log(0.1);
	for (int i = 0; i < NDESTS; i++) {
		double r = d->logprice[i] - lb;
		double fit = -0.5 * r * r / (r > 0 ? 0.35 * 0.35 : 0.9 * 0.9);
		double like = 1;
		for (int k = 0; k < du->ninterests; k++)
			if (dests[i].tags & (1u << du->interest[k]))
				like += 0.5 * interest_w[k];
		/* pop x season^sensitivity x distance x max(0.1, fit), as one exp */
		w[i] = exp(d->logbase[du->country][i] + du->season * d->logseason[i] + fmax(floor_fit, fit)) * like;
	}
}

/* The next view of a session: tag and region (-1: none) are its focus, prev
 * the view before (-1: none). */
static int pick_view(const struct demo *d, struct rng *r, const double *taste, int tag, int region, int prev)
{
	double w[NDESTS], t = 0;
	for (int i = 0; i < NDESTS; i++) {
		double x = taste[i];
		if (!(dests[i].tags & (1u << tag)))
			x *= 0.08;
		if (region >= 0 && d->dest_region[i] != region)
			x *= 0.1;
		if (prev >= 0) {
			x *= 1 + (double)shared_tags(dests[i].tags, dests[prev].tags) / __builtin_popcount(dests[prev].tags) +
			     (d->dest_region[i] == d->dest_region[prev]);
			if (i == prev)
				x = 0;
		}
		t += w[i] = x;
	}
	return rng_pick(r, w, NDESTS, t);
}

/* One event into d->sb: [user, name, time, item|NULL] plus properties packed by the caller. */
static void ev_head(msgpack_packer *pk, const char *user, const char *name, int64_t t, const char *item, int nprops)
{
	msgpack_pack_map(pk, 4 + (item != NULL));
	sx_pack_kv_str(pk, "user", user);
	sx_pack_kv_str(pk, "name", name);
	sx_pack_kv_int(pk, "time", t);
	if (item)
		sx_pack_kv_str(pk, "item", item);
	sx_pack_key(pk, "properties");
	msgpack_pack_map(pk, (size_t)nprops);
}

/* The events of user u on day `day` (relative), packed into d->sb. */
static uint32_t user_day(struct demo *d, msgpack_packer *pk, uint32_t u, uint32_t day)
{
	struct demo_user *du = &d->users[u];
	int64_t day_start = d->from + (int64_t)day * SX_EV_DAY_MS;
	if ((int32_t)day < du->signup_day)
		return 0;
	struct rng r;
	rng_seed(&r, d->seed, S_DAY, day, u);
	int age = (int)day - du->signup_day;
	int is_signup = age == 0;
	int weekday = (int)(((day_start / SX_EV_DAY_MS) % 7 + 10) % 7); /* 1970-01-01 was a Thursday */
	double p = du->rate * weekday_w[weekday] * (1 + 0.2 * cos(2 * M_PI / 365.2425 * (doy_of(day_start) - 20)));
	if (age > du->lifetime)
		p *= 0.12;
	if (!is_signup && rng_unif(&r) >= fmin(0.95, p))
		return 0;
	int sessions = 1 + (rng_unif(&r) < fmin(0.5, p * 0.3));
	uint32_t n = 0;
	char uid[32], item[96], trip[64];
	double taste[NDESTS], rw[NDESTS], it = 0, st = 0;
	user_id(u, uid, sizeof(uid));
	taste_weights(d, du, taste);
	for (int k = 0; k < du->ninterests; k++)
		it += interest_w[k];
	for (int k = 0; k < NTAGS; k++)
		st += tag_share[k];
	for (int s = 0; s < sessions; s++) {
		const char *dev = devices[rng_unif(&r) < 0.8 ? du->device : (int)(rng_next(&r) % 3)].name;
		int devi = 0;
		while (strcmp(devices[devi].name, dev) != 0)
			devi++;
		int64_t t = day_start + (int64_t)rng_pick(&r, hour_w, 24, 64.9) * SX_EV_HOUR_MS +
			    (int64_t)(rng_unif(&r) * 3000000.0);
		if (is_signup && s == 0) {
			ev_head(pk, uid, "signup", t, NULL, 1);
			sx_pack_kv_str(pk, "device", dev);
			n++;
			t += 20000;
		}
		int tag = rng_unif(&r) < 0.75 ? du->interest[rng_pick(&r, interest_w, du->ninterests, it)]
					      : rng_pick(&r, tag_share, NTAGS, st);
		int region = -1;
		if (rng_unif(&r) < 0.35) {
			/* a region where the tag can be found, by the user's weights */
			double rt = 0;
			for (int g = 0; g < d->nregions; g++)
				rw[g] = 0;
			for (int i = 0; i < NDESTS; i++)
				if (dests[i].tags & (1u << tag))
					rw[d->dest_region[i]] += taste[i], rt += taste[i];
			if (rt > 0)
				region = rng_pick(&r, rw, d->nregions, rt);
		}
		int nsearch = 1 + (rng_unif(&r) < 0.4) + (rng_unif(&r) < 0.15);
		for (int i = 0; i < nsearch; i++) {
			ev_head(pk, uid, "search", t, NULL, 2 + (region >= 0));
			sx_pack_kv_str(pk, "device", dev);
			sx_pack_kv_str(pk, "query", tag_names[tag]);
			if (region >= 0)
				sx_pack_kv_str(pk, "region", d->regions[region]);
			n++;
			t += 15000 + (int64_t)(rng_unif(&r) * 105000);
		}
		int nview = 1 + (int)fmin(7, floor(-log(1 - rng_unif(&r)) * 1.5));
		int last = -1;
		for (int i = 0; i < nview; i++) {
			if (i == 0 && du->last != NO_DEST && rng_unif(&r) < 0.3)
				last = du->last;
			else
				last = pick_view(d, &r, taste, tag, region, last);
			du->last = (uint16_t)last;
			snprintf(item, sizeof(item), "dest:%s", dests[last].key);
			ev_head(pk, uid, "view", t, item, 1);
			sx_pack_kv_str(pk, "device", dev);
			n++;
			t += 20000 + (int64_t)(rng_unif(&r) * 220000);
			if (rng_unif(&r) < 0.3) {
				double aw[ACTS_MAX], at = 0;
				char act[96];
				for (int a = 0; a < d->nacts[last]; a++) {
					unsigned tg = act_tags(&dests[last], d->acts[last][a]);
					aw[a] = 1;
					for (int k = 0; k < du->ninterests; k++)
						if (tg & (1u << du->interest[k]))
							aw[a] += 2 * interest_w[k];
					at += aw[a];
				}
				snprintf(act, sizeof(act), "act:%s:%d", dests[last].key, rng_pick(&r, aw, d->nacts[last], at) + 1);
				ev_head(pk, uid, "view", t, act, 1);
				sx_pack_kv_str(pk, "device", dev);
				n++;
				t += 20000 + (int64_t)(rng_unif(&r) * 160000);
			}
		}
		if (rng_unif(&r) >= 0.12 * device_conv[devi])
			continue;
		int nights = 2 + (int)fmin(12, floor(-log(1 - rng_unif(&r)) * 4));
		int travellers = 1 + (int)(rng_next(&r) % 4);
		snprintf(trip, sizeof(trip), "t-%s-%u-%d", uid, day, s);
		ev_head(pk, uid, "create_trip", t, item, 4);
		sx_pack_kv_str(pk, "device", dev);
		sx_pack_kv_str(pk, "trip", trip);
		sx_pack_kv_int(pk, "nights", nights);
		sx_pack_kv_int(pk, "travellers", travellers);
		n++;
		if (rng_unif(&r) >= 0.38 * (0.8 + 0.2 * device_conv[devi]))
			continue;
		t += 120000 + (int64_t)(rng_unif(&r) * 1680000);
		double value = dests[last].price * nights * pow(travellers, 0.85) * exp(0.25 * rng_normal(&r));
		ev_head(pk, uid, "book", t, item, 6);
		sx_pack_kv_str(pk, "device", dev);
		sx_pack_kv_str(pk, "trip", trip);
		sx_pack_kv_double(pk, "value", round(value * 100) / 100);
		sx_pack_kv_str(pk, "currency", "EUR");
		sx_pack_kv_int(pk, "nights", nights);
		sx_pack_kv_int(pk, "travellers", travellers);
		n++;
	}
	return n;
}

/* Generates and ingests up to CHUNK_EVENTS events. */
static int phase_days(struct demo *d)
{
	msgpack_packer pk;
	uint32_t nev = 0, visits = 0;
	msgpack_sbuffer_clear(&d->sb);
	msgpack_packer_init(&pk, &d->sb, msgpack_sbuffer_write);
	while (d->day < d->ndays && nev < CHUNK_EVENTS && visits < CHUNK_VISITS) {
		if (d->next_user == 0)
			day_weights(d, d->from + (int64_t)d->day * SX_EV_DAY_MS);
		nev += user_day(d, &pk, d->next_user, d->day);
		visits++;
		if (++d->next_user == d->nusers)
			d->next_user = 0, d->day++;
	}
	struct sx_ev_batch *b = sx__ev_batch_new();
	if (!b)
		return SX_ENOMEM;
	size_t off = 0;
	int rc = 0;
	while (rc == 0 && off < d->sb.size) {
		msgpack_object o;
		msgpack_unpack_return ur = msgpack_unpack(d->sb.data, d->sb.size, &off, &d->zone, &o);
		if (ur != MSGPACK_UNPACK_SUCCESS && ur != MSGPACK_UNPACK_EXTRA_BYTES) {
			rc = sx_diag_set(SX_EINTERNAL, "demo: an event does not decode");
			break;
		}
		rc = sx__ev_batch_add(b, &o, d->to);
		if (rc == SX_EINVAL) {
			d->rejected++;
			rc = 0;
		} else if (rc == 0) {
			d->events++;
		}
	}
	if (rc < 0) {
		sx__ev_batch_free(b);
		return rc;
	}
	rc = sx__ev_batch_finish(b);
	msgpack_zone_clear(&d->zone);
	return rc;
}

static void demo_close_cb(uv_handle_t *h)
{
	struct demo *d = h->data;
	free(d->users);
	msgpack_sbuffer_destroy(&d->sb);
	msgpack_zone_destroy(&d->zone);
	free(d);
}

static void demo_end(struct demo *d, int rc)
{
	char msg[256];
	if (rc == 0 && sx_store_failed_batches(sx__ev_eng->store) != d->failed0)
		rc = sx_diag_set(SX_EIO, "a batch of the demo data failed to commit (see the log): the demo "
					 "is incomplete");
	snprintf(msg, sizeof(msg), "%s", rc < 0 ? sx_diag_last() : "");
	if (rc < 0)
		sx_log_error("demo: load failed: %s", msg);
	else
		sx_log_info("demo: %u users, %llu items, %llu events over %u days in %llu ms", d->nusers,
			    (unsigned long long)d->items, (unsigned long long)d->events, d->ndays,
			    (unsigned long long)(sx_now_ms() - d->started_ms));
	if (d->req) {
		if (rc == 0) {
			msgpack_packer *pk = &d->req->pk;
			msgpack_pack_map(pk, 8);
			sx_pack_kv_uint(pk, "users", d->nusers);
			sx_pack_kv_uint(pk, "days", d->ndays);
			sx_pack_kv_uint(pk, "seed", d->seed);
			sx_pack_kv_uint(pk, "items", d->items);
			sx_pack_kv_uint(pk, "events", d->events);
			sx_pack_kv_int(pk, "from", d->from);
			sx_pack_kv_int(pk, "to", d->to);
			sx_pack_kv_uint(pk, "ms", sx_now_ms() - d->started_ms);
		} else {
			sx_diag_set(rc, "%s", msg);
		}
		sx_req_finish(d->req, rc);
		d->req = NULL;
	}
	running = NULL;
	uv_timer_stop(&d->timer);
	uv_close((uv_handle_t *)&d->timer, demo_close_cb);
}

static void demo_tick(uv_timer_t *t)
{
	struct demo *d = t->data;
	int rc = 0;
	if (sx_store_pending_bytes(sx__ev_eng->store) > PENDING_MAX) {
		uv_timer_start(&d->timer, demo_tick, 2, 0);
		return;
	}
	switch (d->phase) {
	case 0:
		rc = phase_items(d);
		d->phase = 1;
		break;
	case 1:
		rc = phase_users(d);
		if (d->next_user == d->nusers)
			d->phase = 2, d->next_user = 0;
		break;
	case 2:
		rc = phase_days(d);
		if (d->day == d->ndays)
			d->phase = 3;
		break;
	}
	sx_store_read_end(sx__ev_eng->store);
	msgpack_zone_clear(&d->zone);
	if (rc < 0 || d->phase == 3) {
		demo_end(d, rc);
		return;
	}
	/* 1 ms: re-armed with 0 from its own callback, libuv 1.44 runs it again in the same
	 * pass, without a turn end (store flush) or I/O in between */
	uv_timer_start(&d->timer, demo_tick, 1, 0);
}

static int demo_begin(uint32_t users, uint32_t days, uint64_t seed, int64_t end, struct sx_req *req)
{
	if (running)
		return sx_diag_set(SX_ESTATE, "a demo load is running");
	struct demo *d = calloc(1, sizeof(*d));
	if (!d || !(d->users = calloc(users, sizeof(*d->users)))) {
		free(d);
		return sx_diag_set(SX_ENOMEM, "out of memory for %u demo users", users);
	}
	d->req = req;
	d->seed = seed;
	d->nusers = users;
	d->ndays = days;
	d->to = sx__ev_floor(end, SX_EV_DAY_MS);
	if (d->to < end)
		d->to += SX_EV_DAY_MS;
	d->from = d->to - (int64_t)days * SX_EV_DAY_MS;
	d->started_ms = sx_now_ms();
	d->failed0 = sx_store_failed_batches(sx__ev_eng->store);
	msgpack_sbuffer_init(&d->sb);
	msgpack_zone_init(&d->zone, 1 << 16);
	/* Zipf popularity over a seeded order of the destinations. */
	int order[NDESTS];
	struct rng r;
	rng_seed(&r, seed, S_ITEMS, 0, 0);
	for (int i = 0; i < NDESTS; i++)
		order[i] = i;
	for (int i = NDESTS - 1; i > 0; i--) {
		int j = (int)(rng_next(&r) % (uint64_t)(i + 1)), x = order[i];
		order[i] = order[j], order[j] = x;
	}
	for (int i = 0; i < NDESTS; i++)
		d->pop[order[i]] = 1.0 / pow(i + 1, 1.1);
	for (int i = 0; i < NDESTS; i++) {
		int g = 0;
		d->logprice[i] = log(dests[i].price);
		while (g < d->nregions && strcmp(d->regions[g], dests[i].region) != 0)
			g++;
		if (g == d->nregions)
			d->regions[d->nregions++] = dests[i].region;
		d->dest_region[i] = (uint8_t)g;
		for (int c = 0; c < NCOUNTRIES; c++) {
			double km = distance_km(country_pos[c][0], country_pos[c][1], dests[i].lat, dests[i].lon);
			d->logbase[c][i] = log(d->pop[i]) - 1.3 * log1p(km / 1000) + (strcmp(countries[c].name, dests[i].country) == 0 ? M_LN2 : 0);
		}
	}
	plan_activities(d);
	uv_timer_init(sx__ev_eng->loop, &d->timer);
	d->timer.data = d;
	uv_timer_start(&d->timer, demo_tick, 0, 0);
	running = d;
	return 0;
}

static int m_demo_load(struct sx_req *req, const msgpack_object *args, msgpack_packer *pk, void *ud)
{
	static const char *const known[] = {"users", "days", "seed", "end", NULL};
	int64_t users = 2000, days = 60, seed = 1, end = sx_wall_ms();
	int rc;
	SX_UNUSED(pk), SX_UNUSED(ud);
	if ((rc = sx_arg_only(args, known)) < 0 || (rc = sx_arg_int(args, "users", 0, &users)) < 0 ||
	    (rc = sx_arg_int(args, "days", 0, &days)) < 0 || (rc = sx_arg_int(args, "seed", 0, &seed)) < 0 ||
	    (rc = sx_arg_int(args, "end", 0, &end)) < 0)
		return rc;
	if (users < 1 || users > DEMO_USERS_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'users' must be 1 to %d", DEMO_USERS_MAX);
	if (days < 1 || days > DEMO_DAYS_MAX)
		return sx_diag_set(SX_EINVAL, "argument 'days' must be 1 to %d", DEMO_DAYS_MAX);
	if (seed < 0)
		return sx_diag_set(SX_EINVAL, "argument 'seed' must be a non-negative integer");
	if (end < days * SX_EV_DAY_MS || end > SX_EVENTS_TIME_MAX - SX_EV_DAY_MS)
		return sx_diag_set(SX_EINVAL, "argument 'end' must be ms since 1970, at least 'days' days after it");
	if ((rc = demo_begin((uint32_t)users, (uint32_t)days, (uint64_t)seed, end, req)) < 0)
		return rc;
	return SX_RPC_DEFER;
}

int sx__ev_demo_start(struct sx_engine *e)
{
	const struct sx_method m = {"demo.load", SX_ROLE_ADMIN, m_demo_load, NULL,
				    "generate and ingest the demo travel data set {users?, days?, seed?, end?}"};
	int rc = sx_rpc_register(e->rpc, &m);
	if (rc < 0)
		return rc;
	if (e->cfg && e->cfg->demo && sx_events_user_bound() == 0) {
		sx_log_info("demo: the store has no users; loading 2000 users over 60 days");
		return demo_begin(2000, 60, 42, sx_wall_ms(), NULL);
	}
	return 0;
}

void sx__ev_demo_stop(struct sx_engine *e)
{
	SX_UNUSED(e);
	if (running) {
		sx_diag_set(SX_ECANCELED, "the server is stopping");
		demo_end(running, SX_ECANCELED);
	}
}
