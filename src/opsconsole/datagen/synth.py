"""Synthetic business data shared by `seed` and `simulate`: vocabularies and column expressions.

Every expression here is a pure function of (seed, row counter), so the same person, product or
address comes out the same wherever it is generated: a simulated duplicate of customer 42 recomputes
customer 42's name and e-mail instead of reading them back from the database.
"""

from __future__ import annotations

import polars as pl

from opsconsole.datagen.rng import Rng

FIRST_NAMES = [
    ("James", "james"), ("Mary", "mary"), ("Robert", "robert"), ("Patricia", "patricia"),
    ("John", "john"), ("Jennifer", "jennifer"), ("Michael", "michael"), ("Linda", "linda"),
    ("David", "david"), ("Elizabeth", "elizabeth"), ("William", "william"), ("Barbara", "barbara"),
    ("Richard", "richard"), ("Susan", "susan"), ("Joseph", "joseph"), ("Jessica", "jessica"),
    ("Thomas", "thomas"), ("Sarah", "sarah"), ("Christopher", "christopher"), ("Karen", "karen"),
    ("Daniel", "daniel"), ("Lisa", "lisa"), ("Matthew", "matthew"), ("Nancy", "nancy"),
    ("Anthony", "anthony"), ("Sandra", "sandra"), ("Mark", "mark"), ("Ashley", "ashley"),
    ("José", "jose"), ("Zoë", "zoe"), ("Łukasz", "lukasz"), ("Chloé", "chloe"), ("Søren", "soren"),
    ("Yuki", "yuki"), ("Hiroshi", "hiroshi"), ("Aiko", "aiko"), ("Lena", "lena"), ("Jonas", "jonas"),
    ("Emma", "emma"), ("Lucas", "lucas"), ("Olivia", "olivia"), ("Noah", "noah"), ("Amelia", "amelia"),
    ("Oliver", "oliver"), ("Isla", "isla"), ("Jack", "jack"), ("Sophie", "sophie"), ("Leon", "leon"),
    ("Mia", "mia"), ("Felix", "felix"), ("Priya", "priya"), ("Arjun", "arjun"), ("Wei", "wei"),
    ("Mei", "mei"), ("Omar", "omar"), ("Fatima", "fatima"), ("Mateo", "mateo"), ("Valentina", "valentina"),
]  # fmt: skip
LAST_NAMES = [
    ("Smith", "smith"), ("Johnson", "johnson"), ("Williams", "williams"), ("Brown", "brown"),
    ("Jones", "jones"), ("Garcia", "garcia"), ("Miller", "miller"), ("Davis", "davis"),
    ("Rodriguez", "rodriguez"), ("Martinez", "martinez"), ("Hernandez", "hernandez"), ("Lopez", "lopez"),
    ("Wilson", "wilson"), ("Anderson", "anderson"), ("Taylor", "taylor"), ("Thomas", "thomas"),
    ("Moore", "moore"), ("Jackson", "jackson"), ("Martin", "martin"), ("Lee", "lee"),
    ("Müller", "mueller"), ("Schmidt", "schmidt"), ("Schneider", "schneider"), ("Fischer", "fischer"),
    ("Dubois", "dubois"), ("Lefèvre", "lefevre"), ("Moreau", "moreau"), ("O'Brien", "obrien"),
    ("Sato", "sato"), ("Suzuki", "suzuki"), ("Takahashi", "takahashi"), ("Tanaka", "tanaka"),
    ("Kowalski", "kowalski"), ("Nowak", "nowak"), ("Rossi", "rossi"), ("Bianchi", "bianchi"),
    ("Patel", "patel"), ("Singh", "singh"), ("Chen", "chen"), ("Wang", "wang"), ("Kim", "kim"),
    ("Nguyen", "nguyen"), ("Silva", "silva"), ("Santos", "santos"), ("Jensen", "jensen"),
    ("Nielsen", "nielsen"), ("Hughes", "hughes"), ("Walker", "walker"), ("Young", "young"),
]  # fmt: skip
EMAIL_DOMAINS = ["example.com", "example.org", "example.net", "mail.example", "inbox.example"]

# Country, dialling code, currency, share of customers; cities with their state/region.
COUNTRIES = [
    ("US", "1", "USD", 0.45), ("DE", "49", "EUR", 0.12), ("FR", "33", "EUR", 0.08),
    ("GB", "44", "GBP", 0.12), ("JP", "81", "JPY", 0.08), ("CA", "1", "CAD", 0.06),
    ("AU", "61", "AUD", 0.05), ("CH", "41", "CHF", 0.04),
]  # fmt: skip
CITIES = {
    "US": [("New York", "NY"), ("Austin", "TX"), ("Chicago", "IL"), ("Seattle", "WA"), ("Denver", "CO"),
           ("Boston", "MA")],
    "DE": [("Berlin", "BE"), ("München", "BY"), ("Hamburg", "HH"), ("Köln", "NW"), ("Leipzig", "SN"),
           ("Stuttgart", "BW")],
    "FR": [("Paris", "IDF"), ("Lyon", "ARA"), ("Marseille", "PAC"), ("Toulouse", "OCC"), ("Nantes", "PDL"),
           ("Lille", "HDF")],
    "GB": [("London", "ENG"), ("Manchester", "ENG"), ("Edinburgh", "SCT"), ("Cardiff", "WLS"),
           ("Bristol", "ENG"), ("Belfast", "NIR")],
    "JP": [("Tokyo", "13"), ("Osaka", "27"), ("Kyoto", "26"), ("Sapporo", "01"), ("Fukuoka", "40"),
           ("Nagoya", "23")],
    "CA": [("Toronto", "ON"), ("Vancouver", "BC"), ("Montréal", "QC"), ("Calgary", "AB"), ("Ottawa", "ON"),
           ("Halifax", "NS")],
    "AU": [("Sydney", "NSW"), ("Melbourne", "VIC"), ("Brisbane", "QLD"), ("Perth", "WA"), ("Adelaide", "SA"),
           ("Hobart", "TAS")],
    "CH": [("Zürich", "ZH"), ("Genève", "GE"), ("Basel", "BS"), ("Bern", "BE"), ("Lausanne", "VD"),
           ("Luzern", "LU")],
}  # fmt: skip
STREETS = ["Maple", "Oak", "Station", "High", "Church", "Park", "Mill", "Lake", "Hill", "River", "Garden",
           "King", "Queen", "Elm", "Cedar", "Bahnhof", "Rue de la Paix", "Sakura"]  # fmt: skip
STREET_KINDS = ["St", "Ave", "Rd", "Lane", "Way", "Blvd"]

# Units of each currency per USD (fixed demo rates) and how many decimals the currency uses.
CURRENCY_RATE = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CAD": 1.36, "AUD": 1.52, "CHF": 0.88}
CURRENCY_DECIMALS = {"JPY": 0}
CURRENCIES = list(CURRENCY_RATE)

CATEGORIES = ["electronics", "books", "home", "garden", "toys", "fashion", "sports", "beauty", "grocery",
              "automotive"]  # fmt: skip
PRODUCT_NOUNS = {
    "electronics": ["Headphones", "Charger", "Keyboard", "Monitor", "Speaker"],
    "books": ["Novel", "Cookbook", "Atlas", "Biography", "Guide"],
    "home": ["Lamp", "Blanket", "Mug Set", "Vase", "Clock"],
    "garden": ["Hose", "Planter", "Shears", "Seed Kit", "Bench"],
    "toys": ["Puzzle", "Robot", "Kite", "Board Game", "Plush Bear"],
    "fashion": ["Jacket", "Scarf", "Sneakers", "Backpack", "Sunglasses"],
    "sports": ["Yoga Mat", "Dumbbells", "Football", "Water Bottle", "Tennis Racket"],
    "beauty": ["Face Cream", "Shampoo", "Perfume", "Lip Balm", "Hair Dryer"],
    "grocery": ["Coffee Beans", "Olive Oil", "Green Tea", "Chocolate", "Honey"],
    "automotive": ["Dash Cam", "Car Wax", "Floor Mats", "Jump Starter", "Tyre Gauge"],
}
PRODUCT_ADJECTIVES = ["Classic", "Smart", "Eco", "Deluxe", "Compact", "Pro", "Vintage", "Ultra", "Cozy",
                      "Travel"]  # fmt: skip
PRODUCTS = 500  # product ids 1..PRODUCTS; a product's category, name and list price derive from its id

EVENT_TYPES = ["page_view", "product_view", "add_to_cart", "purchase"]
ANONYMOUS_EVENTS = "ecommerce_anonymous_events"  # events without a customer (migration 0029)


def split_events(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A logged-in visitor's events (ecommerce_events) and an anonymous visitor's (ANONYMOUS_EVENTS,
    which has no customer_id column): ecommerce_events is keyed by customer, so that Citus can place
    every row with its customer (docs/scaling.md)."""
    anonymous = frame["customer_id"].is_null()
    return frame.filter(~anonymous), frame.filter(anonymous).drop("customer_id")


def anonymous_columns(columns: list[str]) -> list[str]:
    """The event columns an anonymous event has: all but customer_id."""
    return [c for c in columns if c != "customer_id"]


# Device classes as the customer-360 rule reads them: ILIKE '%mobile%' -> mobile, '%tablet%' -> tablet.
USER_AGENTS = {
    "mobile": [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/123.0.0.0 Mobile Safari/537.36",
    ],
    "tablet": [
        "Mozilla/5.0 (Android 14; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0",
        "Mozilla/5.0 (Linux; Android 13; Tablet SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
    ],
    "desktop": [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    ],
}
DEVICE_SHARES = {"mobile": 0.45, "tablet": 0.15, "desktop": 0.40}
SHOP_URL = "https://shop.globaltech.example"

MARKET_SYMBOLS = [
    ("AAPL", 190.0, "NASDAQ", "USD"), ("MSFT", 420.0, "NASDAQ", "USD"), ("GOOGL", 165.0, "NASDAQ", "USD"),
    ("AMZN", 180.0, "NASDAQ", "USD"), ("NVDA", 900.0, "NASDAQ", "USD"), ("META", 480.0, "NASDAQ", "USD"),
    ("JPM", 195.0, "NYSE", "USD"), ("V", 275.0, "NYSE", "USD"), ("SAP", 175.0, "XETRA", "EUR"),
    ("SIE", 180.0, "XETRA", "EUR"), ("HSBA", 6.5, "LSE", "GBP"), ("7203", 3400.0, "TSE", "JPY"),
    ("EURUSD", 1.08, "FX", "USD"), ("GBPUSD", 1.26, "FX", "USD"), ("USDJPY", 151.0, "FX", "JPY"),
    ("BTC-USD", 64000.0, "CRYPTO", "USD"),
]  # fmt: skip

TRANSACTION_TYPES = ["payment", "refund", "transfer", "fee", "adjustment", "chargeback"]


def _flat_cities() -> tuple[list[str], list[str]]:
    cities, states = [], []
    for code, *_ in COUNTRIES:
        for city, state in CITIES[code]:
            cities.append(city)
            states.append(state)
    return cities, states


_CITY_NAMES, _CITY_STATES = _flat_cities()
_CITIES_PER_COUNTRY = 6


def gather(values: list, idx: pl.Expr) -> pl.Expr:
    """values[idx] as an expression."""
    return pl.lit(pl.Series(values)).gather(idx)


# --------------------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------------------
def person_columns(rng: Rng, pid: pl.Expr) -> dict[str, pl.Expr]:
    """Name, e-mail, phone and address of the person with identity ``pid`` (an Int64 expression).

    Two customer rows with the same pid are the same person; the e-mail returned here is the
    canonical (lower-case, trimmed) form.
    """
    fi = rng.randint("person.first", pid, 0, len(FIRST_NAMES))
    li = rng.randint("person.last", pid, 0, len(LAST_NAMES))
    country = rng.index("person.country", pid, [c[3] for c in COUNTRIES])
    city = country * _CITIES_PER_COUNTRY + rng.randint("person.city", pid, 0, _CITIES_PER_COUNTRY)
    dial = gather([c[1] for c in COUNTRIES], country)
    email = pl.concat_str(
        [
            gather([f[1] for f in FIRST_NAMES], fi),
            pl.lit("."),
            gather([x[1] for x in LAST_NAMES], li),
            pid.cast(pl.String),
            pl.lit("@"),
            rng.choice("person.domain", pid, EMAIL_DOMAINS),
        ]
    )
    phone = pl.concat_str(
        [
            pl.lit("+"),
            dial,
            pl.lit(" "),
            rng.randint("person.ph1", pid, 200, 1000).cast(pl.String),
            pl.lit(" "),
            rng.randint("person.ph2", pid, 1_000_000, 10_000_000).cast(pl.String),
        ]
    )
    return {
        "first_name": gather([f[0] for f in FIRST_NAMES], fi),
        "last_name": gather([x[0] for x in LAST_NAMES], li),
        "email": email,
        "phone": phone,
        "country_idx": country,
        "city_idx": city,
    }


def address_struct(rng: Rng, key: pl.Expr, country_idx: pl.Expr, city_idx: pl.Expr) -> pl.Expr:
    """A postal address as a struct (written to jsonb): street, city, state, postal_code, country."""
    street = pl.concat_str(
        [
            rng.randint("addr.no", key, 1, 400).cast(pl.String),
            pl.lit(" "),
            rng.choice("addr.street", key, STREETS),
            pl.lit(" "),
            rng.choice("addr.kind", key, STREET_KINDS),
        ]
    )
    return pl.struct(
        street=street,
        city=gather(_CITY_NAMES, city_idx),
        state=gather(_CITY_STATES, city_idx),
        postal_code=rng.randint("addr.zip", key, 10000, 99999).cast(pl.String),
        country=gather([c[0] for c in COUNTRIES], country_idx),
    )


def email_variant(rng: Rng, key: pl.Expr, email: pl.Expr) -> pl.Expr:
    """The same address written differently: other case and/or surrounding whitespace.

    lower(btrim(variant)) always equals the canonical address (which is lower-case already), while
    the raw text always differs from it. Only spaces are added: btrim() trims nothing else.
    """
    kind = rng.randint("email.variant", key, 0, 5)
    return (
        pl.when(kind == 0)
        .then(email.str.to_uppercase())
        .when(kind == 1)
        .then(pl.lit(" ") + email)
        .when(kind == 2)
        .then(email + pl.lit("  "))
        .when(kind == 3)
        .then(email.str.to_titlecase())
        .otherwise(pl.lit(" ") + email.str.to_uppercase() + pl.lit(" "))
    )


# --------------------------------------------------------------------------------------------------
# Products and web sessions
# --------------------------------------------------------------------------------------------------
def product_columns(rng: Rng, product_id: pl.Expr) -> dict[str, pl.Expr]:
    """Category, name and list price (USD) of a product, all derived from its id."""
    cat = (product_id % len(CATEGORIES)).cast(pl.Int64)
    nouns = [n for c in CATEGORIES for n in PRODUCT_NOUNS[c]]
    noun = cat * 5 + rng.randint("product.noun", product_id, 0, 5)
    name = pl.concat_str(
        [rng.choice("product.adj", product_id, PRODUCT_ADJECTIVES), pl.lit(" "), gather(nouns, noun)]
    )
    price = (rng.lognormal("product.price", product_id, 35.0, 0.9) * 100).round(0) / 100 + 0.99
    return {"category": gather(CATEGORIES, cat), "product_name": name, "price": price.round(2)}


def device_columns(rng: Rng, key: pl.Expr) -> dict[str, pl.Expr]:
    """Device class and a user agent string of that class for a session."""
    devices = list(DEVICE_SHARES)
    device = rng.index("device.class", key, list(DEVICE_SHARES.values()))
    flat = [ua for d in devices for ua in USER_AGENTS[d]]
    offsets = []
    acc = 0
    for d in devices:
        offsets.append(acc)
        acc += len(USER_AGENTS[d])
    counts = [len(USER_AGENTS[d]) for d in devices]
    # Every class has a number of agents dividing 6, so the pick within a class is uniform.
    ua_idx = gather(offsets, device) + rng.randint("device.ua", key, 0, 6) % gather(counts, device)
    return {"device": gather(devices, device), "user_agent": gather(flat, ua_idx)}


def ip_address(rng: Rng, key: pl.Expr) -> pl.Expr:
    """A public-looking IPv4 address (or IPv6 documentation-range address for ~5%)."""
    first = gather(
        [23, 31, 37, 45, 51, 62, 77, 81, 89, 94, 103, 109, 145, 151, 176, 185, 192, 203],
        rng.randint("ip.a", key, 0, 18),
    )
    v4 = pl.concat_str(
        [
            first.cast(pl.String),
            pl.lit("."),
            rng.randint("ip.b", key, 0, 256).cast(pl.String),
            pl.lit("."),
            rng.randint("ip.c", key, 0, 256).cast(pl.String),
            pl.lit("."),
            rng.randint("ip.d", key, 1, 255).cast(pl.String),
        ]
    )
    v6 = pl.concat_str(
        [
            pl.lit("2001:db8:"),
            rng.randint("ip.6a", key, 1, 10000).cast(pl.String),
            pl.lit("::"),
            rng.randint("ip.6b", key, 1, 9999).cast(pl.String),
        ]
    )
    return pl.when(rng.uniform("ip.v6", key) < 0.05).then(v6).otherwise(v4)


def event_payload(
    rng: Rng, key: pl.Expr, event_type: pl.Expr, product_id: pl.Expr, currency: str | pl.Expr = "USD"
) -> dict[str, pl.Expr]:
    """event_data (JSON text) and page_url for an e-commerce event.

    page_view: {"category", "referrer"}; product_view / add_to_cart / purchase:
    {"category", "product": {"id", "name"}, "price", "currency", "quantity"}.
    """
    prod = product_columns(rng, product_id)
    cur = pl.lit(currency) if isinstance(currency, str) else currency
    quantity = (
        pl.when(event_type == "product_view")
        .then(pl.lit(None, dtype=pl.Int64))
        .otherwise(rng.randint("event.qty", key, 1, 4))
    )
    page = pl.struct(
        category=prod["category"],
        referrer=rng.choice(
            "event.ref", key, ["direct", "search", "email", "social", "ads"], [4, 3, 1, 1, 1]
        ),
    ).struct.json_encode()
    product_event = pl.struct(
        category=prod["category"],
        product=pl.struct(id=product_id, name=prod["product_name"]),
        price=prod["price"],
        currency=cur,
        quantity=quantity,
    ).struct.json_encode()
    url = (
        pl.when(event_type == "page_view")
        .then(pl.concat_str([pl.lit(SHOP_URL + "/c/"), prod["category"]]))
        .when(event_type == "purchase")
        .then(pl.lit(SHOP_URL + "/checkout/complete"))
        .otherwise(pl.concat_str([pl.lit(SHOP_URL + "/p/"), product_id.cast(pl.String)]))
    )
    data = pl.when(event_type == "page_view").then(page).otherwise(product_event)
    return {"event_data": data, "page_url": url}


def amount_in(currency: pl.Expr, usd: pl.Expr) -> pl.Expr:
    """A USD amount converted into ``currency`` at the demo rates, rounded to the currency's decimals."""
    rate = currency.replace_strict(CURRENCY_RATE, return_dtype=pl.Float64)
    value = usd * rate
    return pl.when(currency == "JPY").then(value.round(0)).otherwise(value.round(2))


# --------------------------------------------------------------------------------------------------
# Accounts
# --------------------------------------------------------------------------------------------------
SECOND_ACCOUNT_SHARE = 0.12  # customers paying from two accounts
SECOND_ACCOUNT_USE = 0.4  # share of such a customer's transactions on the second account


def account_for(rng: Rng, customer_id: pl.Expr, key: pl.Expr) -> pl.Expr:
    """The account a customer's transaction runs on: customer_id * 10 + 1, or + 2 for the second
    account of the ~12% of customers who have one (account -> customer is customer_id = account // 10).
    """
    has_two = rng.uniform("account.two", customer_id) < SECOND_ACCOUNT_SHARE
    use_two = rng.uniform("account.use", key) < SECOND_ACCOUNT_USE
    return customer_id * 10 + 1 + (has_two & use_two).cast(pl.Int64)
