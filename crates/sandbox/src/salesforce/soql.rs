//! The SOQL subset the Salesforce simulator understands:
//! `SELECT f1, f2, (SELECT g1 FROM ChildRelationship ...) FROM Object [WHERE cond] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...]
//! [LIMIT n] [OFFSET n]`, where `cond` combines comparisons (`=`, `!=`, `<>`, `<`, `<=`,
//! `>`, `>=`, `LIKE`, `IN (...)`, `NOT IN (...)`) with `AND`, `OR`, `NOT` and parentheses.
//! Literals: `'strings'`, numbers, `true`/`false`/`null`, dates `2024-05-01` and unquoted
//! datetimes `2024-05-01T00:00:00Z` (or with `+hh:mm`, `.000`; a `+0000` offset is refused
//! as Salesforce refuses it).
//!
//! Parsing knows no schema; the simulator resolves field names and types afterwards.

use crate::store::{Stamp, parse_rfc3339};

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    Date(String),
    DateTime(Stamp),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
    Compare {
        field: String,
        op: Op,
        value: Literal,
    },
    In {
        field: String,
        values: Vec<Literal>,
        negated: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    pub field: String,
    pub descending: bool,
    pub nulls_last: bool,
}

/// One entry of a select list.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Field(String),
    /// A child relationship query; its `object` is the relationship name (`OrderItems`).
    Subquery(Query),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Plain fields (`Name`) and parent-to-child subqueries (`(SELECT Id FROM OrderItems)`).
    pub items: Vec<Item>,
    pub object: String,
    pub condition: Option<Condition>,
    pub order: Vec<OrderBy>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

/// A syntax error, worded like Salesforce's `MALFORMED_QUERY` messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Number(String),
    Symbol(&'static str),
}

fn tokens(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        if c.is_whitespace() {
            index += 1;
        } else if c == '\'' {
            let mut value = String::new();
            index += 1;
            loop {
                match chars.get(index) {
                    None => return Err(SyntaxError("unterminated string literal".into())),
                    Some('\\') => {
                        if let Some(next) = chars.get(index + 1) {
                            value.push(match next {
                                'n' => '\n',
                                't' => '\t',
                                other => *other,
                            });
                        }
                        index += 2;
                    }
                    Some('\'') => {
                        index += 1;
                        break;
                    }
                    Some(other) => {
                        value.push(*other);
                        index += 1;
                    }
                }
            }
            out.push(Token::Text(value));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(index + 1).is_some_and(char::is_ascii_digit))
        {
            let start = index;
            index += 1;
            while chars
                .get(index)
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '+'))
            {
                index += 1;
            }
            out.push(Token::Number(chars[start..index].iter().collect()));
        } else if c.is_alphabetic() || c == '_' {
            let start = index;
            while chars
                .get(index)
                .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '.'))
            {
                index += 1;
            }
            out.push(Token::Word(chars[start..index].iter().collect()));
        } else {
            let two: String = chars[index..(index + 2).min(chars.len())].iter().collect();
            let symbol = match two.as_str() {
                "!=" => Some("!="),
                "<>" => Some("<>"),
                "<=" => Some("<="),
                ">=" => Some(">="),
                _ => None,
            };
            if let Some(symbol) = symbol {
                out.push(Token::Symbol(symbol));
                index += 2;
                continue;
            }
            let symbol = match c {
                ',' => ",",
                '(' => "(",
                ')' => ")",
                '=' => "=",
                '<' => "<",
                '>' => ">",
                _ => return Err(SyntaxError(format!("unexpected token: '{c}'"))),
            };
            out.push(Token::Symbol(symbol));
            index += 1;
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

fn describe(token: Option<&Token>) -> String {
    match token {
        None => "unexpected end of query".to_string(),
        Some(Token::Word(word)) => format!("unexpected token: '{word}'"),
        Some(Token::Text(text)) => format!("unexpected token: ''{text}''"),
        Some(Token::Number(number)) => format!("unexpected token: '{number}'"),
        Some(Token::Symbol(symbol)) => format!("unexpected token: '{symbol}'"),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(word)) if word.eq_ignore_ascii_case(keyword))
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), SyntaxError> {
        if self.is_keyword(keyword) {
            self.position += 1;
            Ok(())
        } else {
            Err(SyntaxError(describe(self.peek())))
        }
    }

    fn symbol(&mut self, symbol: &str) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(Token::Symbol(found)) if *found == symbol => {
                self.position += 1;
                Ok(())
            }
            other => Err(SyntaxError(describe(other))),
        }
    }

    fn identifier(&mut self) -> Result<String, SyntaxError> {
        const RESERVED: [&str; 13] = [
            "select", "from", "where", "order", "by", "limit", "offset", "and", "or", "not", "in",
            "asc", "desc",
        ];
        match self.peek() {
            Some(Token::Word(word))
                if !RESERVED
                    .iter()
                    .any(|reserved| word.eq_ignore_ascii_case(reserved)) =>
            {
                let word = word.clone();
                self.position += 1;
                Ok(word)
            }
            other => Err(SyntaxError(describe(other))),
        }
    }

    /// An object name: any word, keywords included (`FROM Order`).
    fn object_name(&mut self) -> Result<String, SyntaxError> {
        match self.next() {
            Some(Token::Word(word)) => Ok(word),
            other => Err(SyntaxError(describe(other.as_ref()))),
        }
    }

    fn number(&mut self) -> Result<usize, SyntaxError> {
        match self.next() {
            Some(Token::Number(number)) => number
                .parse()
                .map_err(|_| SyntaxError(format!("unexpected token: '{number}'"))),
            other => Err(SyntaxError(describe(other.as_ref()))),
        }
    }

    fn literal(&mut self) -> Result<Literal, SyntaxError> {
        match self.next() {
            Some(Token::Text(text)) => Ok(Literal::Text(text)),
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("null") => Ok(Literal::Null),
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("false") => {
                Ok(Literal::Bool(false))
            }
            Some(Token::Number(number)) => {
                if number.contains('T') {
                    // SOQL takes `Z` or `+hh:mm` offsets only, not the `+0000` of its own output.
                    parse_rfc3339(&number)
                        .map(Literal::DateTime)
                        .ok_or_else(|| {
                            SyntaxError(format!(
                                "line 1:0 no viable alternative at character '{number}'"
                            ))
                        })
                } else if number.len() == 10 && number.matches('-').count() == 2 {
                    chrono::NaiveDate::parse_from_str(&number, "%Y-%m-%d")
                        .map(|_| Literal::Date(number.clone()))
                        .map_err(|_| SyntaxError(format!("unexpected token: '{number}'")))
                } else {
                    number
                        .parse::<f64>()
                        .map(Literal::Number)
                        .map_err(|_| SyntaxError(format!("unexpected token: '{number}'")))
                }
            }
            other => Err(SyntaxError(describe(other.as_ref()))),
        }
    }

    fn condition(&mut self) -> Result<Condition, SyntaxError> {
        let mut terms = vec![self.conjunction()?];
        while self.is_keyword("or") {
            self.position += 1;
            terms.push(self.conjunction()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Condition::Or(terms)
        })
    }

    fn conjunction(&mut self) -> Result<Condition, SyntaxError> {
        let mut terms = vec![self.factor()?];
        while self.is_keyword("and") {
            self.position += 1;
            terms.push(self.factor()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Condition::And(terms)
        })
    }

    fn factor(&mut self) -> Result<Condition, SyntaxError> {
        if self.is_keyword("not") {
            self.position += 1;
            return Ok(Condition::Not(Box::new(self.factor()?)));
        }
        if matches!(self.peek(), Some(Token::Symbol("("))) {
            self.position += 1;
            let inner = self.condition()?;
            self.symbol(")")?;
            return Ok(inner);
        }
        let field = self.identifier()?;
        if self.is_keyword("in") || self.is_keyword("not") {
            let negated = self.is_keyword("not");
            if negated {
                self.position += 1;
            }
            self.keyword("in")?;
            self.symbol("(")?;
            let mut values = vec![self.literal()?];
            while matches!(self.peek(), Some(Token::Symbol(","))) {
                self.position += 1;
                values.push(self.literal()?);
            }
            self.symbol(")")?;
            return Ok(Condition::In {
                field,
                values,
                negated,
            });
        }
        let op = match self.next() {
            Some(Token::Symbol("=")) => Op::Eq,
            Some(Token::Symbol("!=")) | Some(Token::Symbol("<>")) => Op::Ne,
            Some(Token::Symbol("<")) => Op::Lt,
            Some(Token::Symbol("<=")) => Op::Le,
            Some(Token::Symbol(">")) => Op::Gt,
            Some(Token::Symbol(">=")) => Op::Ge,
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("like") => Op::Like,
            other => return Err(SyntaxError(describe(other.as_ref()))),
        };
        let value = self.literal()?;
        Ok(Condition::Compare { field, op, value })
    }
}

/// Parses one query.
pub fn parse(text: &str) -> Result<Query, SyntaxError> {
    let mut parser = Parser {
        tokens: tokens(text)?,
        position: 0,
    };
    let query = select(&mut parser, true)?;
    if let Some(token) = parser.peek() {
        return Err(SyntaxError(describe(Some(token))));
    }
    Ok(query)
}

fn select_item(parser: &mut Parser, top_level: bool) -> Result<Item, SyntaxError> {
    if top_level && matches!(parser.peek(), Some(Token::Symbol("("))) {
        parser.position += 1;
        let inner = select(parser, false)?;
        parser.symbol(")")?;
        Ok(Item::Subquery(inner))
    } else {
        parser.identifier().map(Item::Field)
    }
}

/// `SELECT ... [LIMIT n] [OFFSET n]`; subqueries are allowed only at the top level.
fn select(parser: &mut Parser, top_level: bool) -> Result<Query, SyntaxError> {
    parser.keyword("select")?;
    let mut items = vec![select_item(parser, top_level)?];
    while matches!(parser.peek(), Some(Token::Symbol(","))) {
        parser.position += 1;
        items.push(select_item(parser, top_level)?);
    }
    parser.keyword("from")?;
    let object = parser.object_name()?;
    let condition = if parser.is_keyword("where") {
        parser.position += 1;
        Some(parser.condition()?)
    } else {
        None
    };
    let mut order = Vec::new();
    if parser.is_keyword("order") {
        parser.position += 1;
        parser.keyword("by")?;
        loop {
            let field = parser.identifier()?;
            let mut descending = false;
            if parser.is_keyword("asc") {
                parser.position += 1;
            } else if parser.is_keyword("desc") {
                parser.position += 1;
                descending = true;
            }
            let mut nulls_last = descending;
            if parser.is_keyword("nulls") {
                parser.position += 1;
                if parser.is_keyword("first") {
                    parser.position += 1;
                    nulls_last = false;
                } else {
                    parser.keyword("last")?;
                    nulls_last = true;
                }
            }
            order.push(OrderBy {
                field,
                descending,
                nulls_last,
            });
            if matches!(parser.peek(), Some(Token::Symbol(","))) {
                parser.position += 1;
            } else {
                break;
            }
        }
    }
    let limit = if parser.is_keyword("limit") {
        parser.position += 1;
        Some(parser.number()?)
    } else {
        None
    };
    let offset = if parser.is_keyword("offset") {
        parser.position += 1;
        Some(parser.number()?)
    } else {
        None
    };
    Ok(Query {
        items,
        object,
        condition,
        order,
        limit,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_incremental_query_connectors_send() {
        let query = parse(
            "SELECT Id, LastName, SystemModstamp FROM Contact WHERE SystemModstamp > 2024-05-01T00:00:00Z ORDER BY SystemModstamp, Id LIMIT 500",
        )
        .expect("valid query");
        let fields = ["Id", "LastName", "SystemModstamp"].map(|name| Item::Field(name.to_string()));
        assert_eq!(query.items, fields.to_vec());
        assert_eq!(query.object, "Contact");
        assert_eq!(
            query.condition,
            Some(Condition::Compare {
                field: "SystemModstamp".into(),
                op: Op::Gt,
                value: Literal::DateTime(1_714_521_600_000),
            })
        );
        assert_eq!(query.order.len(), 2);
        assert_eq!(query.limit, Some(500));
        let orders = parse("SELECT Id, (SELECT Id FROM OrderItems ORDER BY OrderItemNumber) FROM Order ORDER BY Id")
            .expect("Order is an object name");
        assert_eq!(orders.object, "Order");
        let Some(Item::Subquery(items)) = orders.items.get(1) else {
            panic!("expected a subquery");
        };
        assert_eq!(items.object, "OrderItems");
        assert_eq!(items.order.len(), 1);
    }

    #[test]
    fn parses_boolean_logic_and_lists() {
        let query = parse("select Id from Pricebook2 where IsStandard = true and (Name = 'A' or Name IN ('B', 'C'))")
            .expect("valid query");
        let Some(Condition::And(terms)) = query.condition else {
            panic!("expected a conjunction");
        };
        assert_eq!(terms.len(), 2);
        assert!(matches!(&terms[1], Condition::Or(options) if options.len() == 2));
    }

    #[test]
    fn rejects_malformed_queries_with_the_offending_token() {
        let error = |text: &str| parse(text).expect_err("malformed").0;
        assert_eq!(error("SELECT FROM Contact"), "unexpected token: 'FROM'");
        assert_eq!(error("SELECT Id Contact"), "unexpected token: 'Contact'");
        assert_eq!(
            error("SELECT Id FROM Contact WHERE"),
            "unexpected end of query"
        );
        assert_eq!(
            error("SELECT Id FROM Contact LIMIT ten"),
            "unexpected token: 'ten'"
        );
        assert!(error("SELECT Id FROM Contact WHERE Name = 'x").contains("unterminated"));
        assert!(
            error("SELECT Id FROM Contact WHERE SystemModstamp > 2024-05-01T00:00:00.000+0000")
                .contains("no viable")
        );
        assert!(
            parse("SELECT Id FROM Contact WHERE SystemModstamp > 2024-05-01T00:00:00.000+02:00")
                .is_ok()
        );
    }
}
