//! The ISO 3166-1 country table (alpha-2, alpha-3, English short name, common name) with
//! each country's international calling code (ITU-T E.164 assignments; 0 where a territory has
//! none of its own), and the ISO 4217 currency codes. Generated from the published standards;
//! edit only to follow a change of the standards.

/// One ISO 3166-1 country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Country {
    pub alpha2: &'static str,
    pub alpha3: &'static str,
    pub name: &'static str,
    /// A shorter everyday name where the official short name is long ("Bolivia").
    pub common_name: Option<&'static str>,
    /// The international calling code, without `+` (47 for Norway); 0 when there is none.
    pub calling_code: u16,
}

const fn c(
    alpha2: &'static str,
    alpha3: &'static str,
    name: &'static str,
    common_name: Option<&'static str>,
    calling_code: u16,
) -> Country {
    Country {
        alpha2,
        alpha3,
        name,
        common_name,
        calling_code,
    }
}

/// Every ISO 3166-1 country, sorted by alpha-2 code.
pub static COUNTRIES: &[Country] = &[
    c("AD", "AND", "Andorra", None, 376),
    c("AE", "ARE", "United Arab Emirates", None, 971),
    c("AF", "AFG", "Afghanistan", None, 93),
    c("AG", "ATG", "Antigua and Barbuda", None, 1),
    c("AI", "AIA", "Anguilla", None, 1),
    c("AL", "ALB", "Albania", None, 355),
    c("AM", "ARM", "Armenia", None, 374),
    c("AO", "AGO", "Angola", None, 244),
    c("AQ", "ATA", "Antarctica", None, 0),
    c("AR", "ARG", "Argentina", None, 54),
    c("AS", "ASM", "American Samoa", None, 1),
    c("AT", "AUT", "Austria", None, 43),
    c("AU", "AUS", "Australia", None, 61),
    c("AW", "ABW", "Aruba", None, 297),
    c("AX", "ALA", "Åland Islands", None, 358),
    c("AZ", "AZE", "Azerbaijan", None, 994),
    c("BA", "BIH", "Bosnia and Herzegovina", None, 387),
    c("BB", "BRB", "Barbados", None, 1),
    c("BD", "BGD", "Bangladesh", None, 880),
    c("BE", "BEL", "Belgium", None, 32),
    c("BF", "BFA", "Burkina Faso", None, 226),
    c("BG", "BGR", "Bulgaria", None, 359),
    c("BH", "BHR", "Bahrain", None, 973),
    c("BI", "BDI", "Burundi", None, 257),
    c("BJ", "BEN", "Benin", None, 229),
    c("BL", "BLM", "Saint Barthélemy", None, 590),
    c("BM", "BMU", "Bermuda", None, 1),
    c("BN", "BRN", "Brunei Darussalam", None, 673),
    c(
        "BO",
        "BOL",
        "Bolivia, Plurinational State of",
        Some("Bolivia"),
        591,
    ),
    c("BQ", "BES", "Bonaire, Sint Eustatius and Saba", None, 599),
    c("BR", "BRA", "Brazil", None, 55),
    c("BS", "BHS", "Bahamas", None, 1),
    c("BT", "BTN", "Bhutan", None, 975),
    c("BV", "BVT", "Bouvet Island", None, 0),
    c("BW", "BWA", "Botswana", None, 267),
    c("BY", "BLR", "Belarus", None, 375),
    c("BZ", "BLZ", "Belize", None, 501),
    c("CA", "CAN", "Canada", None, 1),
    c("CC", "CCK", "Cocos (Keeling) Islands", None, 61),
    c(
        "CD",
        "COD",
        "Congo, The Democratic Republic of the",
        None,
        243,
    ),
    c("CF", "CAF", "Central African Republic", None, 236),
    c("CG", "COG", "Congo", None, 242),
    c("CH", "CHE", "Switzerland", None, 41),
    c("CI", "CIV", "Côte d'Ivoire", None, 225),
    c("CK", "COK", "Cook Islands", None, 682),
    c("CL", "CHL", "Chile", None, 56),
    c("CM", "CMR", "Cameroon", None, 237),
    c("CN", "CHN", "China", None, 86),
    c("CO", "COL", "Colombia", None, 57),
    c("CR", "CRI", "Costa Rica", None, 506),
    c("CU", "CUB", "Cuba", None, 53),
    c("CV", "CPV", "Cabo Verde", None, 238),
    c("CW", "CUW", "Curaçao", None, 599),
    c("CX", "CXR", "Christmas Island", None, 61),
    c("CY", "CYP", "Cyprus", None, 357),
    c("CZ", "CZE", "Czechia", None, 420),
    c("DE", "DEU", "Germany", None, 49),
    c("DJ", "DJI", "Djibouti", None, 253),
    c("DK", "DNK", "Denmark", None, 45),
    c("DM", "DMA", "Dominica", None, 1),
    c("DO", "DOM", "Dominican Republic", None, 1),
    c("DZ", "DZA", "Algeria", None, 213),
    c("EC", "ECU", "Ecuador", None, 593),
    c("EE", "EST", "Estonia", None, 372),
    c("EG", "EGY", "Egypt", None, 20),
    c("EH", "ESH", "Western Sahara", None, 212),
    c("ER", "ERI", "Eritrea", None, 291),
    c("ES", "ESP", "Spain", None, 34),
    c("ET", "ETH", "Ethiopia", None, 251),
    c("FI", "FIN", "Finland", None, 358),
    c("FJ", "FJI", "Fiji", None, 679),
    c("FK", "FLK", "Falkland Islands (Malvinas)", None, 500),
    c("FM", "FSM", "Micronesia, Federated States of", None, 691),
    c("FO", "FRO", "Faroe Islands", None, 298),
    c("FR", "FRA", "France", None, 33),
    c("GA", "GAB", "Gabon", None, 241),
    c("GB", "GBR", "United Kingdom", None, 44),
    c("GD", "GRD", "Grenada", None, 1),
    c("GE", "GEO", "Georgia", None, 995),
    c("GF", "GUF", "French Guiana", None, 594),
    c("GG", "GGY", "Guernsey", None, 44),
    c("GH", "GHA", "Ghana", None, 233),
    c("GI", "GIB", "Gibraltar", None, 350),
    c("GL", "GRL", "Greenland", None, 299),
    c("GM", "GMB", "Gambia", None, 220),
    c("GN", "GIN", "Guinea", None, 224),
    c("GP", "GLP", "Guadeloupe", None, 590),
    c("GQ", "GNQ", "Equatorial Guinea", None, 240),
    c("GR", "GRC", "Greece", None, 30),
    c(
        "GS",
        "SGS",
        "South Georgia and the South Sandwich Islands",
        None,
        0,
    ),
    c("GT", "GTM", "Guatemala", None, 502),
    c("GU", "GUM", "Guam", None, 1),
    c("GW", "GNB", "Guinea-Bissau", None, 245),
    c("GY", "GUY", "Guyana", None, 592),
    c("HK", "HKG", "Hong Kong", None, 852),
    c("HM", "HMD", "Heard Island and McDonald Islands", None, 0),
    c("HN", "HND", "Honduras", None, 504),
    c("HR", "HRV", "Croatia", None, 385),
    c("HT", "HTI", "Haiti", None, 509),
    c("HU", "HUN", "Hungary", None, 36),
    c("ID", "IDN", "Indonesia", None, 62),
    c("IE", "IRL", "Ireland", None, 353),
    c("IL", "ISR", "Israel", None, 972),
    c("IM", "IMN", "Isle of Man", None, 44),
    c("IN", "IND", "India", None, 91),
    c("IO", "IOT", "British Indian Ocean Territory", None, 246),
    c("IQ", "IRQ", "Iraq", None, 964),
    c("IR", "IRN", "Iran, Islamic Republic of", Some("Iran"), 98),
    c("IS", "ISL", "Iceland", None, 354),
    c("IT", "ITA", "Italy", None, 39),
    c("JE", "JEY", "Jersey", None, 44),
    c("JM", "JAM", "Jamaica", None, 1),
    c("JO", "JOR", "Jordan", None, 962),
    c("JP", "JPN", "Japan", None, 81),
    c("KE", "KEN", "Kenya", None, 254),
    c("KG", "KGZ", "Kyrgyzstan", None, 996),
    c("KH", "KHM", "Cambodia", None, 855),
    c("KI", "KIR", "Kiribati", None, 686),
    c("KM", "COM", "Comoros", None, 269),
    c("KN", "KNA", "Saint Kitts and Nevis", None, 1),
    c(
        "KP",
        "PRK",
        "Korea, Democratic People's Republic of",
        Some("North Korea"),
        850,
    ),
    c("KR", "KOR", "Korea, Republic of", Some("South Korea"), 82),
    c("KW", "KWT", "Kuwait", None, 965),
    c("KY", "CYM", "Cayman Islands", None, 1),
    c("KZ", "KAZ", "Kazakhstan", None, 7),
    c(
        "LA",
        "LAO",
        "Lao People's Democratic Republic",
        Some("Laos"),
        856,
    ),
    c("LB", "LBN", "Lebanon", None, 961),
    c("LC", "LCA", "Saint Lucia", None, 1),
    c("LI", "LIE", "Liechtenstein", None, 423),
    c("LK", "LKA", "Sri Lanka", None, 94),
    c("LR", "LBR", "Liberia", None, 231),
    c("LS", "LSO", "Lesotho", None, 266),
    c("LT", "LTU", "Lithuania", None, 370),
    c("LU", "LUX", "Luxembourg", None, 352),
    c("LV", "LVA", "Latvia", None, 371),
    c("LY", "LBY", "Libya", None, 218),
    c("MA", "MAR", "Morocco", None, 212),
    c("MC", "MCO", "Monaco", None, 377),
    c("MD", "MDA", "Moldova, Republic of", Some("Moldova"), 373),
    c("ME", "MNE", "Montenegro", None, 382),
    c("MF", "MAF", "Saint Martin (French part)", None, 590),
    c("MG", "MDG", "Madagascar", None, 261),
    c("MH", "MHL", "Marshall Islands", None, 692),
    c("MK", "MKD", "North Macedonia", None, 389),
    c("ML", "MLI", "Mali", None, 223),
    c("MM", "MMR", "Myanmar", None, 95),
    c("MN", "MNG", "Mongolia", None, 976),
    c("MO", "MAC", "Macao", None, 853),
    c("MP", "MNP", "Northern Mariana Islands", None, 1),
    c("MQ", "MTQ", "Martinique", None, 596),
    c("MR", "MRT", "Mauritania", None, 222),
    c("MS", "MSR", "Montserrat", None, 1),
    c("MT", "MLT", "Malta", None, 356),
    c("MU", "MUS", "Mauritius", None, 230),
    c("MV", "MDV", "Maldives", None, 960),
    c("MW", "MWI", "Malawi", None, 265),
    c("MX", "MEX", "Mexico", None, 52),
    c("MY", "MYS", "Malaysia", None, 60),
    c("MZ", "MOZ", "Mozambique", None, 258),
    c("NA", "NAM", "Namibia", None, 264),
    c("NC", "NCL", "New Caledonia", None, 687),
    c("NE", "NER", "Niger", None, 227),
    c("NF", "NFK", "Norfolk Island", None, 672),
    c("NG", "NGA", "Nigeria", None, 234),
    c("NI", "NIC", "Nicaragua", None, 505),
    c("NL", "NLD", "Netherlands", None, 31),
    c("NO", "NOR", "Norway", None, 47),
    c("NP", "NPL", "Nepal", None, 977),
    c("NR", "NRU", "Nauru", None, 674),
    c("NU", "NIU", "Niue", None, 683),
    c("NZ", "NZL", "New Zealand", None, 64),
    c("OM", "OMN", "Oman", None, 968),
    c("PA", "PAN", "Panama", None, 507),
    c("PE", "PER", "Peru", None, 51),
    c("PF", "PYF", "French Polynesia", None, 689),
    c("PG", "PNG", "Papua New Guinea", None, 675),
    c("PH", "PHL", "Philippines", None, 63),
    c("PK", "PAK", "Pakistan", None, 92),
    c("PL", "POL", "Poland", None, 48),
    c("PM", "SPM", "Saint Pierre and Miquelon", None, 508),
    c("PN", "PCN", "Pitcairn", None, 0),
    c("PR", "PRI", "Puerto Rico", None, 1),
    c("PS", "PSE", "Palestine, State of", None, 970),
    c("PT", "PRT", "Portugal", None, 351),
    c("PW", "PLW", "Palau", None, 680),
    c("PY", "PRY", "Paraguay", None, 595),
    c("QA", "QAT", "Qatar", None, 974),
    c("RE", "REU", "Réunion", None, 262),
    c("RO", "ROU", "Romania", None, 40),
    c("RS", "SRB", "Serbia", None, 381),
    c("RU", "RUS", "Russian Federation", None, 7),
    c("RW", "RWA", "Rwanda", None, 250),
    c("SA", "SAU", "Saudi Arabia", None, 966),
    c("SB", "SLB", "Solomon Islands", None, 677),
    c("SC", "SYC", "Seychelles", None, 248),
    c("SD", "SDN", "Sudan", None, 249),
    c("SE", "SWE", "Sweden", None, 46),
    c("SG", "SGP", "Singapore", None, 65),
    c(
        "SH",
        "SHN",
        "Saint Helena, Ascension and Tristan da Cunha",
        None,
        290,
    ),
    c("SI", "SVN", "Slovenia", None, 386),
    c("SJ", "SJM", "Svalbard and Jan Mayen", None, 47),
    c("SK", "SVK", "Slovakia", None, 421),
    c("SL", "SLE", "Sierra Leone", None, 232),
    c("SM", "SMR", "San Marino", None, 378),
    c("SN", "SEN", "Senegal", None, 221),
    c("SO", "SOM", "Somalia", None, 252),
    c("SR", "SUR", "Suriname", None, 597),
    c("SS", "SSD", "South Sudan", None, 211),
    c("ST", "STP", "Sao Tome and Principe", None, 239),
    c("SV", "SLV", "El Salvador", None, 503),
    c("SX", "SXM", "Sint Maarten (Dutch part)", None, 1),
    c("SY", "SYR", "Syrian Arab Republic", Some("Syria"), 963),
    c("SZ", "SWZ", "Eswatini", None, 268),
    c("TC", "TCA", "Turks and Caicos Islands", None, 1),
    c("TD", "TCD", "Chad", None, 235),
    c("TF", "ATF", "French Southern Territories", None, 0),
    c("TG", "TGO", "Togo", None, 228),
    c("TH", "THA", "Thailand", None, 66),
    c("TJ", "TJK", "Tajikistan", None, 992),
    c("TK", "TKL", "Tokelau", None, 690),
    c("TL", "TLS", "Timor-Leste", None, 670),
    c("TM", "TKM", "Turkmenistan", None, 993),
    c("TN", "TUN", "Tunisia", None, 216),
    c("TO", "TON", "Tonga", None, 676),
    c("TR", "TUR", "Türkiye", None, 90),
    c("TT", "TTO", "Trinidad and Tobago", None, 1),
    c("TV", "TUV", "Tuvalu", None, 688),
    c(
        "TW",
        "TWN",
        "Taiwan, Province of China",
        Some("Taiwan"),
        886,
    ),
    c(
        "TZ",
        "TZA",
        "Tanzania, United Republic of",
        Some("Tanzania"),
        255,
    ),
    c("UA", "UKR", "Ukraine", None, 380),
    c("UG", "UGA", "Uganda", None, 256),
    c("UM", "UMI", "United States Minor Outlying Islands", None, 0),
    c("US", "USA", "United States", None, 1),
    c("UY", "URY", "Uruguay", None, 598),
    c("UZ", "UZB", "Uzbekistan", None, 998),
    c("VA", "VAT", "Holy See (Vatican City State)", None, 39),
    c("VC", "VCT", "Saint Vincent and the Grenadines", None, 1),
    c(
        "VE",
        "VEN",
        "Venezuela, Bolivarian Republic of",
        Some("Venezuela"),
        58,
    ),
    c("VG", "VGB", "Virgin Islands, British", None, 1),
    c("VI", "VIR", "Virgin Islands, U.S.", None, 1),
    c("VN", "VNM", "Viet Nam", Some("Vietnam"), 84),
    c("VU", "VUT", "Vanuatu", None, 678),
    c("WF", "WLF", "Wallis and Futuna", None, 681),
    c("WS", "WSM", "Samoa", None, 685),
    c("YE", "YEM", "Yemen", None, 967),
    c("YT", "MYT", "Mayotte", None, 262),
    c("ZA", "ZAF", "South Africa", None, 27),
    c("ZM", "ZMB", "Zambia", None, 260),
    c("ZW", "ZWE", "Zimbabwe", None, 263),
];

/// Indexes into [`COUNTRIES`], sorted by alpha-3 code.
static BY_ALPHA3: &[u8] = &[
    13, 2, 7, 4, 14, 5, 0, 1, 9, 6, 10, 8, 215, 3, 12, 11, 15, 23, 19, 24, 29, 20, 18, 21, 22, 31,
    16, 25, 35, 36, 26, 28, 30, 17, 27, 32, 33, 34, 40, 37, 38, 42, 45, 47, 43, 46, 39, 41, 44, 48,
    118, 51, 49, 50, 52, 53, 123, 54, 55, 56, 57, 59, 58, 60, 61, 62, 64, 66, 65, 67, 63, 68, 69,
    70, 71, 74, 73, 72, 75, 76, 78, 80, 81, 82, 85, 86, 84, 92, 87, 88, 77, 83, 90, 79, 91, 93, 94,
    95, 96, 97, 98, 99, 100, 103, 104, 105, 101, 107, 106, 108, 102, 109, 111, 110, 112, 113, 124,
    114, 115, 116, 117, 119, 121, 122, 125, 126, 130, 135, 127, 128, 129, 131, 132, 133, 134, 147,
    140, 136, 137, 138, 141, 154, 156, 142, 143, 144, 152, 145, 139, 146, 148, 158, 150, 151, 149,
    153, 155, 157, 245, 159, 160, 161, 162, 163, 164, 169, 165, 166, 167, 168, 170, 171, 177, 172,
    180, 173, 176, 184, 175, 178, 181, 120, 183, 185, 182, 174, 186, 187, 188, 190, 191, 192, 195,
    204, 197, 89, 198, 200, 193, 202, 209, 203, 205, 179, 189, 207, 208, 206, 201, 199, 196, 212,
    210, 194, 211, 213, 214, 216, 217, 218, 219, 221, 220, 223, 225, 222, 224, 226, 227, 228, 230,
    229, 231, 233, 232, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 246, 247, 248,
];

/// Every active ISO 4217 currency code, sorted.
pub static CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HRK", "HTG", "HUF", "IDR",
    "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW",
    "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA",
    "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD",
    "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG",
    "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE",
    "SLL", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP",
    "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED",
    "VES", "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XDR",
    "XOF", "XPD", "XPF", "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWL",
];

/// The country with this alpha-2 code (upper case).
pub fn by_alpha2(code: &str) -> Option<&'static Country> {
    COUNTRIES
        .binary_search_by(|c| c.alpha2.cmp(code))
        .ok()
        .map(|i| &COUNTRIES[i])
}

/// The country with this alpha-3 code (upper case).
pub fn by_alpha3(code: &str) -> Option<&'static Country> {
    BY_ALPHA3
        .binary_search_by(|&i| COUNTRIES[i as usize].alpha3.cmp(code))
        .ok()
        .map(|i| &COUNTRIES[BY_ALPHA3[i] as usize])
}

/// The country a user most likely means: an alpha-2 or alpha-3 code in any case, or an
/// English name ("Norway", "United States", "Bolivia, Plurinational State of").
pub fn find(text: &str) -> Option<&'static Country> {
    let text = text.trim();
    let mut upper = [0u8; 3];
    if (2..=3).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphabetic()) {
        for (slot, byte) in upper.iter_mut().zip(text.bytes()) {
            *slot = byte.to_ascii_uppercase();
        }
        let code = std::str::from_utf8(&upper[..text.len()]).ok()?;
        return if text.len() == 2 {
            by_alpha2(code)
        } else {
            by_alpha3(code)
        };
    }
    COUNTRIES.iter().find(|c| {
        c.name.eq_ignore_ascii_case(text)
            || c.common_name.is_some_and(|n| n.eq_ignore_ascii_case(text))
    })
}

/// Whether `code` is an active ISO 4217 currency code (upper case).
pub fn is_currency(code: &str) -> bool {
    CURRENCIES.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_complete_and_sorted() {
        assert_eq!(COUNTRIES.len(), 249);
        assert!(COUNTRIES.windows(2).all(|w| w[0].alpha2 < w[1].alpha2));
        assert_eq!(BY_ALPHA3.len(), COUNTRIES.len());
        assert!(CURRENCIES.windows(2).all(|w| w[0] < w[1]));
        for country in COUNTRIES {
            assert_eq!(by_alpha3(country.alpha3), Some(country));
        }
    }

    #[test]
    fn finds_countries_by_code_and_name() {
        assert_eq!(find("no").map(|c| c.alpha3), Some("NOR"));
        assert_eq!(find("NOR").map(|c| c.alpha2), Some("NO"));
        assert_eq!(find("Norway").map(|c| c.calling_code), Some(47));
        assert_eq!(find("bolivia").map(|c| c.alpha2), Some("BO"));
        assert_eq!(find("United States").map(|c| c.calling_code), Some(1));
        assert_eq!(find("XX"), None);
        assert_eq!(find("Atlantis"), None);
    }

    #[test]
    fn knows_currencies() {
        assert!(is_currency("EUR"));
        assert!(is_currency("NOK"));
        assert!(!is_currency("XYZ"));
        assert!(!is_currency("eur"));
    }
}
