//! Turning the 纯真 database's text into labels. It stores a place such as
//! "广东省深圳市", "北京市朝阳区", "新疆乌鲁木齐市" or "美国", and a carrier
//! such as "电信" or the filler "CZ88.NET". A place that starts with a
//! province-level name is in China: that name (in full) is the province and
//! the part up to the next 市/州/盟/地区 the city (a municipality is its own
//! city). A foreign place starts with a country or region name as the
//! database spells it ([`super::countries`], generated from its own
//! structured fields, with English names), the rest of it dropped: the
//! database gives little more for foreign addresses. Texts that name no
//! place (LAN, reserved, CGNAT, unallocated) give no place labels.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::countries::COUNTRIES;
use super::{Labels, Lang};

pub const CHINA_ZH: &str = "中国";

/// (prefix in the database, full Chinese name, English name), longest first
/// where one prefix starts another.
const PROVINCES: &[(&str, &str, &str)] = &[
    ("黑龙江", "黑龙江省", "Heilongjiang"),
    ("内蒙古", "内蒙古自治区", "Inner Mongolia"),
    ("北京", "北京市", "Beijing"),
    ("天津", "天津市", "Tianjin"),
    ("上海", "上海市", "Shanghai"),
    ("重庆", "重庆市", "Chongqing"),
    ("河北", "河北省", "Hebei"),
    ("山西", "山西省", "Shanxi"),
    ("辽宁", "辽宁省", "Liaoning"),
    ("吉林", "吉林省", "Jilin"),
    ("江苏", "江苏省", "Jiangsu"),
    ("浙江", "浙江省", "Zhejiang"),
    ("安徽", "安徽省", "Anhui"),
    ("福建", "福建省", "Fujian"),
    ("江西", "江西省", "Jiangxi"),
    ("山东", "山东省", "Shandong"),
    ("河南", "河南省", "Henan"),
    ("湖北", "湖北省", "Hubei"),
    ("湖南", "湖南省", "Hunan"),
    ("广东", "广东省", "Guangdong"),
    ("海南", "海南省", "Hainan"),
    ("四川", "四川省", "Sichuan"),
    ("贵州", "贵州省", "Guizhou"),
    ("云南", "云南省", "Yunnan"),
    ("陕西", "陕西省", "Shaanxi"),
    ("甘肃", "甘肃省", "Gansu"),
    ("青海", "青海省", "Qinghai"),
    ("广西", "广西壮族自治区", "Guangxi"),
    ("西藏", "西藏自治区", "Tibet"),
    ("宁夏", "宁夏回族自治区", "Ningxia"),
    ("新疆", "新疆维吾尔自治区", "Xinjiang"),
];

const MUNICIPALITIES: [&str; 4] = ["北京", "天津", "上海", "重庆"];

/// What may follow a province prefix in the text before the city.
const PROVINCE_SUFFIXES: &[&str] = &["维吾尔自治区", "壮族自治区", "回族自治区", "自治区", "省", "市"];

/// Hong Kong, Macao and Taiwan: the database files them under China in
/// its structured fields, but writes them first in its text ("台湾省台北市",
/// "香港"); they are country labels here, as in GeoLite2, so that both
/// sources give one label.
const REGIONS: &[(&str, &str)] = &[("香港", "Hong Kong"), ("澳门", "Macao"), ("台湾", "Taiwan")];

/// How qqwry.dat spells some countries otherwise than the ipdb edition's
/// structured field (found by the sweep of every record, tests/realdb.rs):
/// (its spelling, the ipdb's), each then labelled as the ipdb's.
const SPELLINGS: &[(&str, &str)] = &[
    ("多米尼加", "多米尼加共和国"),
    ("瓜德罗普", "瓜德罗普岛"),
    ("留尼汪岛", "留尼汪"),
    ("奥兰群岛", "奥兰"),
    ("格陵兰", "格陵兰岛"),
    ("印尼", "印度尼西亚"),
    ("蒙特塞拉特岛", "蒙塞拉特"),
    ("中非", "中非共和国"),
    ("密克罗尼西亚联邦", "密克罗尼西亚"),
    ("瓦利斯和富图纳群岛", "瓦利斯和富图纳"),
    ("澳洲", "澳大利亚"),
    ("新加披", "新加坡"),
    ("沙特", "沙特阿拉伯"),
];

/// Regions of several countries the text may start with ("欧洲瑞典…"):
/// dropped, and what follows read again; alone they name no country.
const SEVERAL_COUNTRIES: &[&str] =
    &["亚太地区", "北美地区", "拉美地区", "美洲地区", "欧美地区", "非洲地区", "加勒比地区", "欧洲地区", "欧洲", "欧盟"];

/// The big carriers, which the database writes first in a longer text
/// ("电信/DNS服务器", "联通/北京百度网讯科技有限公司联通节点").
const CARRIERS: &[&str] = &["电信", "联通", "移动", "铁通", "广电", "教育网", "长城宽带", "鹏博士"];

/// How texts that name no place begin: LAN, loopback, reserved, multicast,
/// carrier-grade NAT (100.64.0.0/10), unallocated, unknown, and the
/// database's own filler. They are matched at the start of the text only
/// (本地 inside 阿什本地区 is a place), and only after no country or
/// province matched.
const NOT_A_PLACE: &[&str] = &[
    "保留", "局域网", "本机", "本地", "IANA", "未知", "未分配", "纯真", "CZ88", "运营商级NAT", "用于多点传送", "环回地址",
    "共享地址", "广播地址",
];

/// Carrier texts that name no carrier (the database's filler and the
/// designations of the texts above), matched at the start.
const NOT_A_CARRIER: &[&str] = &["CZ88", "纯真", "IANA", "未知", "保留", "局域网", "本机", "本地"];

pub fn labels_from_text(place: &str, carrier: &str, lang: Lang) -> Labels {
    let place = place.trim();
    let isp = carrier_label(carrier);
    let china = match lang {
        Lang::ZhCn => CHINA_ZH,
        Lang::En => "China",
    };
    // "中国重庆市合川区": the province after the country.
    let (place, said_china) = match place.strip_prefix(CHINA_ZH) {
        Some(rest) => (rest, true),
        None => (place, false),
    };
    if let Some(&(prefix, full, english)) = PROVINCES.iter().find(|(prefix, ..)| place.starts_with(prefix)) {
        let mut rest = &place[prefix.len()..];
        if let Some(suffix) = PROVINCE_SUFFIXES.iter().find(|s| rest.starts_with(*s)) {
            rest = &rest[suffix.len()..];
        }
        let city = if MUNICIPALITIES.contains(&prefix) { Some(full.to_string()) } else { city_of(rest) };
        let province = match lang {
            Lang::ZhCn => full,
            Lang::En => english,
        };
        return Labels { country: Some(china.into()), province: Some(province.into()), city, isp };
    }
    if said_china {
        // "中国国际电子商务中心" names an organisation, not a city.
        let city = city_of(place).filter(|city| ["市", "州", "盟", "地区"].iter().any(|m| city.ends_with(m)));
        return Labels { country: Some(china.into()), city, isp, ..Labels::default() };
    }
    let (place, several) = match SEVERAL_COUNTRIES.iter().find_map(|region| place.strip_prefix(region)) {
        Some(rest) => (rest, true),
        None => (place, false),
    };
    if let Some((zh, en)) = country_of(place) {
        let country = match lang {
            Lang::ZhCn => zh,
            Lang::En => en,
        };
        return Labels { country: Some(country.to_string()), isp, ..Labels::default() };
    }
    if place.is_empty() && several {
        return Labels { isp, ..Labels::default() }; // 亚太地区 / APNIC: a real carrier, no country
    }
    if place.is_empty() || NOT_A_PLACE.iter().any(|w| place.starts_with(w)) {
        // The carrier text of a special range describes it (在这个子网中的所有系统,
        // 基址(保留), the database's own version date): no ISP, unless a big one.
        return Labels { isp: big_carrier(carrier).map(String::from), ..Labels::default() };
    }
    // qqwry.dat names some Chinese universities and campuses alone.
    if place.contains("大学") || place.contains("学院") || place.starts_with("东北三省") {
        return Labels { country: Some(china.into()), isp, ..Labels::default() };
    }
    Labels { country: Some(place.to_string()), isp, ..Labels::default() }
}

/// The country or region `place` starts with, in Chinese and English: the
/// longest name that fits (印度尼西亚 before 印度, 多米尼加共和国 before its
/// qqwry.dat spelling 多米尼加). Names are found by their first character
/// (a few per character), not by a walk through all 270.
fn country_of(place: &str) -> Option<(&'static str, &'static str)> {
    let first = place.chars().next()?;
    let (_, country) = country_index()
        .get(&first)?
        .iter()
        .filter(|(spelling, _)| place.starts_with(spelling))
        .max_by_key(|(spelling, _)| spelling.len())?;
    Some(*country)
}

/// Spellings by their first character, each with its country (its Chinese
/// and English names, as in COUNTRIES).
type SpellingIndex = HashMap<char, Vec<(&'static str, (&'static str, &'static str))>>;

/// Every spelling (names, qqwry.dat's own spellings) with its country, by
/// first character.
fn country_index() -> &'static SpellingIndex {
    static INDEX: OnceLock<SpellingIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let names = REGIONS.iter().chain(COUNTRIES);
        let spellings = SPELLINGS.iter().filter_map(|(spelling, name)| Some((*spelling, *names.clone().find(|(zh, _)| zh == name)?)));
        let mut index: HashMap<char, Vec<_>> = HashMap::new();
        for (spelling, country) in names.clone().map(|c| (c.0, *c)).chain(spellings) {
            if let Some(first) = spelling.chars().next() {
                index.entry(first).or_default().push((spelling, country));
            }
        }
        index
    })
}

/// The prefecture-level unit at the start of `rest`: up to the first 市,
/// 州, 盟 or 地区 that ends one (临夏州 of 临夏州临夏市, 阿坝州, 杭州市: a 州
/// followed by 市 is part of the name); all of it when it has none of them
/// (the ipdb edition writes "深圳").
fn city_of(rest: &str) -> Option<String> {
    let rest = rest.trim();
    let ends = ["市", "州", "盟", "地区"].iter().filter_map(|mark| {
        rest.match_indices(mark).map(|(i, m)| i + m.len()).find(|&end| !(*mark == "州" && rest[end..].starts_with("市")))
    });
    let end = ends.min().unwrap_or(rest.len());
    (end > 0).then(|| short_prefecture(&rest[..end]))
}

/// Peoples in the full names of autonomous prefectures (黔南布依族苗族自治州).
const PEOPLES: &[&str] = &[
    "布依族", "苗族", "回族", "朝鲜族", "土家族", "白族", "哈尼族", "彝族", "壮族", "傣族", "景颇族", "傈僳族", "藏族", "羌族", "侗族",
    "蒙古族", "蒙古", "哈萨克", "柯尔克孜",
];

/// An autonomous prefecture by the short name qqwry.dat writes
/// (黔南布依族苗族自治州 → 黔南州, as the ipdb edition's field has it long).
fn short_prefecture(unit: &str) -> String {
    let Some(mut name) = unit.strip_suffix("自治州") else { return unit.to_string() };
    while let Some(shorter) = PEOPLES.iter().find_map(|people| name.strip_suffix(people)) {
        name = shorter;
    }
    format!("{name}州")
}

/// The carrier: a big one when the text's first part (before `/`) begins
/// with its name (电信 of "电信/邮政新村局域网", "电信ADSL"), checked before
/// anything else; nothing for the database's filler; else the text.
fn carrier_label(carrier: &str) -> Option<String> {
    if let Some(big) = big_carrier(carrier) {
        return Some(big.to_string());
    }
    let carrier = carrier.trim();
    if carrier.is_empty() || NOT_A_CARRIER.iter().any(|w| carrier.starts_with(w)) {
        return None;
    }
    Some(carrier.to_string())
}

/// The big carrier whose name begins the carrier's first part, if one does.
fn big_carrier(carrier: &str) -> Option<&'static str> {
    let first = carrier.trim().split('/').next().unwrap_or_default();
    // 电信通 is a company of its own, not China Telecom.
    CARRIERS.iter().find(|c| first.starts_with(*c) && !first.starts_with("电信通")).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zh(place: &str, carrier: &str) -> [String; 4] {
        let l = labels_from_text(place, carrier, Lang::ZhCn);
        [l.country(), l.province(), l.city(), l.isp()].map(str::to_string)
    }

    #[test]
    fn chinese_places_split_into_province_and_city() {
        assert_eq!(zh("广东省深圳市", "电信"), ["中国", "广东省", "深圳市", "电信"]);
        assert_eq!(zh("广东深圳市南山区", "联通"), ["中国", "广东省", "深圳市", "联通"]);
        assert_eq!(zh("北京市朝阳区", "联通"), ["中国", "北京市", "北京市", "联通"]);
        assert_eq!(zh("新疆乌鲁木齐市", "电信"), ["中国", "新疆维吾尔自治区", "乌鲁木齐市", "电信"]);
        assert_eq!(zh("广西壮族自治区桂林市", " 移动 "), ["中国", "广西壮族自治区", "桂林市", "移动"]);
        assert_eq!(zh("内蒙古呼伦贝尔市", "电信"), ["中国", "内蒙古自治区", "呼伦贝尔市", "电信"]);
        assert_eq!(zh("四川省阿坝州", "电信"), ["中国", "四川省", "阿坝州", "电信"]);
        assert_eq!(zh("江苏省", "CZ88.NET"), ["中国", "江苏省", "Unknown", "Unknown"]);
        assert_eq!(zh("中国", "教育网"), ["中国", "Unknown", "Unknown", "教育网"]);
        // Texts from the real qqwry.dat.
        assert_eq!(zh("浙江省杭州市", "阿里巴巴anycast公共DNS"), ["中国", "浙江省", "杭州市", "阿里巴巴anycast公共DNS"]);
        assert_eq!(zh("广东省广州市", "电信/DNS服务器"), ["中国", "广东省", "广州市", "电信"]);
        assert_eq!(zh("北京市", "联通/北京百度网讯科技有限公司联通节点"), ["中国", "北京市", "北京市", "联通"]);
    }

    #[test]
    fn foreign_and_non_places() {
        assert_eq!(zh("美国", " CZ88.NET"), ["美国", "Unknown", "Unknown", "Unknown"]);
        assert_eq!(zh("美国加利福尼亚州圣克拉拉县山景市", "谷歌公司DNS服务器"), ["美国", "Unknown", "Unknown", "谷歌公司DNS服务器"]);
        assert_eq!(zh("印度尼西亚雅加达", ""), ["印度尼西亚", "Unknown", "Unknown", "Unknown"]);
        assert_eq!(zh("台湾省台北市", "中华电信"), ["台湾", "Unknown", "Unknown", "中华电信"]);
        assert_eq!(zh("某岛国", ""), ["某岛国", "Unknown", "Unknown", "Unknown"]);
        // 172.69.94.142 and 181.94.244.94: the country split from its place.
        assert_eq!(zh("毛里求斯路易港", "Cloudflare"), ["毛里求斯", "Unknown", "Unknown", "Cloudflare"]);
        assert_eq!(zh("巴拉圭亚松森自治市", ""), ["巴拉圭", "Unknown", "Unknown", "Unknown"]);
        // qqwry.dat's own spellings, regions of several countries, universities.
        assert_eq!(zh("多米尼加", ""), ["多米尼加共和国", "Unknown", "Unknown", "Unknown"]);
        assert_eq!(zh("印尼雅加达", ""), ["印度尼西亚", "Unknown", "Unknown", "Unknown"]);
        assert_eq!(zh("欧洲瑞典斯德哥尔摩市", ""), ["瑞典", "Unknown", "Unknown", "Unknown"]);
        assert_eq!(zh("亚太地区", "APNIC"), ["Unknown", "Unknown", "Unknown", "APNIC"]);
        assert_eq!(zh("长江大学东校区", "教育网"), ["中国", "Unknown", "Unknown", "教育网"]);
        assert_eq!(zh("日本", "东京大学"), ["日本", "Unknown", "Unknown", "东京大学"]);
        assert_eq!(zh("局域网", "对方和您在同一内部网"), ["Unknown"; 4]);
        assert_eq!(zh("IANA机构", "在这个子网中的所有系统"), ["Unknown"; 4]);
        assert_eq!(zh("纯真网络", "2026年09月16日IP数据"), ["Unknown"; 4]);
        assert_eq!(zh("IANA保留地址", "CZ88.NET"), ["Unknown"; 4]);
        assert_eq!(zh("", ""), ["Unknown"; 4]);
    }

    /// The defects found against the real databases, each with the
    /// address it was found at.
    #[test]
    fn texts_of_the_real_databases_that_were_mislabelled() {
        // 71.105.25.146: 本地 inside 阿什本地区 is no "not a place" word.
        assert_eq!(zh("美国弗吉尼亚州劳登县阿什本地区", "Verizon"), ["美国", "Unknown", "Unknown", "Verizon"]);
        // 61.136.198.13: the carrier rule before any "not a carrier" word.
        assert_eq!(zh("湖北省武汉市", "电信/邮政新村局域网"), ["中国", "湖北省", "武汉市", "电信"]);
        // 61.178.193.149: the city is the prefecture, not the county town after it.
        assert_eq!(zh("甘肃省临夏州临夏市", "电信"), ["中国", "甘肃省", "临夏州", "电信"]);
        assert_eq!(zh("吉林省延边州延吉市", "联通"), ["中国", "吉林省", "延边州", "联通"]);
        assert_eq!(zh("吉林省延边朝鲜族自治州延吉市", "联通"), ["中国", "吉林省", "延边州", "联通"]);
        // The ipdb edition's long names of autonomous prefectures, as qqwry.dat writes them.
        assert_eq!(zh("贵州黔南布依族苗族自治州", "电信"), ["中国", "贵州省", "黔南州", "电信"]);
        assert_eq!(zh("新疆巴音郭楞蒙古自治州", "电信"), ["中国", "新疆维吾尔自治区", "巴音郭楞州", "电信"]);
        assert_eq!(zh("四川阿坝藏族羌族自治州", "电信"), ["中国", "四川省", "阿坝州", "电信"]);
        assert_eq!(zh("新疆阿克苏地区阿克苏市", "电信"), ["中国", "新疆维吾尔自治区", "阿克苏地区", "电信"]);
        assert_eq!(zh("内蒙古锡林郭勒盟锡林浩特市", "电信"), ["中国", "内蒙古自治区", "锡林郭勒盟", "电信"]);
        assert_eq!(zh("浙江省杭州市西湖区", "电信"), ["中国", "浙江省", "杭州市", "电信"]);
        assert_eq!(zh("广东省广州市", "电信"), ["中国", "广东省", "广州市", "电信"]);
        // 100.73.182.87: carrier-grade NAT is no country.
        assert_eq!(zh("运营商级NAT", "CZ88.NET"), ["Unknown"; 4]);
        assert_eq!(zh("未分配地址", ""), ["Unknown"; 4]);
        // An organisation after 中国 is no city; a province after it is one.
        assert_eq!(zh("中国国际电子商务中心", ""), ["中国", "Unknown", "Unknown", "Unknown"]);
        assert_eq!(zh("中国重庆市合川区", "电信"), ["中国", "重庆市", "重庆市", "电信"]);
        // A company whose name begins like a big carrier's stays itself.
        assert_eq!(zh("北京市", "电信通"), ["中国", "北京市", "北京市", "电信通"]);
    }

    #[test]
    fn english_names_the_country_and_province() {
        let l = labels_from_text("广东省深圳市", "电信", Lang::En);
        assert_eq!((l.country(), l.province(), l.city()), ("China", "Guangdong", "深圳市"));
        let en = |place: &str| labels_from_text(place, "", Lang::En).country().to_string();
        assert_eq!(en("美国弗吉尼亚州劳登县阿什本地区"), "United States");
        assert_eq!(en("毛里求斯路易港"), "Mauritius");
        assert_eq!(en("台湾省台北市"), "Taiwan");
        // Every country the database names has an English name.
        let untranslated: Vec<_> = COUNTRIES.iter().filter(|(zh, en)| en.is_empty() || zh == en).collect();
        assert!(untranslated.is_empty(), "{untranslated:?}");
        // Every qqwry.dat spelling names a country of the list.
        for (spelling, name) in SPELLINGS {
            assert_eq!(country_of(spelling).map(|c| c.0), Some(*name), "{spelling}");
        }
    }
}
