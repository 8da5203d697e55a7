//! Turning the 纯真 database's text into labels. It stores a place such as
//! "广东省深圳市", "北京市朝阳区", "新疆乌鲁木齐市" or "美国", and a carrier
//! such as "电信" or the filler "CZ88.NET". A place that starts with a
//! province-level name is in China: that name (in full) is the province and
//! the part up to the next 市/州/盟/地区 the city (a municipality is its own
//! city). Anything else is taken as a country name, as the database gives
//! little more for foreign addresses.

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

/// Texts that name no place.
const NOT_A_PLACE: &[&str] = &["保留", "局域网", "本机", "本地", "IANA", "未知", "纯真", "CZ88"];

pub fn labels_from_text(place: &str, carrier: &str, lang: Lang) -> Labels {
    let place = place.trim();
    let isp = carrier_label(carrier);
    if place.is_empty() || NOT_A_PLACE.iter().any(|w| place.contains(w)) {
        return Labels { isp, ..Labels::default() };
    }
    let china = match lang {
        Lang::ZhCn => CHINA_ZH,
        Lang::En => "China",
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
    if let Some(rest) = place.strip_prefix(CHINA_ZH) {
        return Labels { country: Some(china.into()), city: city_of(rest), isp, ..Labels::default() };
    }
    Labels { country: Some(place.to_string()), isp, ..Labels::default() }
}

/// The city at the start of `rest`: up to and including 市, 州, 盟 or 地区;
/// all of it when it has none of them (the ipdb edition writes "深圳").
fn city_of(rest: &str) -> Option<String> {
    let rest = rest.trim();
    let end = ["市", "州", "盟", "地区"]
        .iter()
        .filter_map(|mark| rest.find(mark).map(|i| i + mark.len()))
        .min()
        .unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_string())
}

fn carrier_label(carrier: &str) -> Option<String> {
    let carrier = carrier.trim();
    (!carrier.is_empty() && !NOT_A_PLACE.iter().any(|w| carrier.contains(w))).then(|| carrier.to_string())
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
    }

    #[test]
    fn foreign_and_non_places() {
        assert_eq!(zh("美国", " CZ88.NET"), ["美国", "Unknown", "Unknown", "Unknown"]);
        assert_eq!(zh("日本", "东京大学"), ["日本", "Unknown", "Unknown", "东京大学"]);
        assert_eq!(zh("局域网", "对方和您在同一内部网"), ["Unknown", "Unknown", "Unknown", "对方和您在同一内部网"]);
        assert_eq!(zh("IANA保留地址", "CZ88.NET"), ["Unknown"; 4]);
        assert_eq!(zh("", ""), ["Unknown"; 4]);
    }

    #[test]
    fn english_names_the_country_and_province() {
        let l = labels_from_text("广东省深圳市", "电信", Lang::En);
        assert_eq!((l.country(), l.province(), l.city()), ("China", "Guangdong", "深圳市"));
    }
}
