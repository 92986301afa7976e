//! The fields of a build that a CI tells and a close sends, written once in `fields!`:
//! how each CI keeps them (`Fields<Read>`, ci.rs), what was found and where
//! (`Fields<Option<Found>>`), the setting that overrides each (config.rs) and what is sent
//! (`Fields<Option<String>>` in a `Build`, client/body.rs). A new field is a line here, its
//! reads in the CIs' rows, and its override, if it has one.

/// Declares [`Fields`] and the few ways to go over it, from one list of the fields with the
/// name each has in the request's body.
macro_rules! fields {
    ($($(#[doc = $doc:literal])* $field:ident: $key:literal,)*) => {
        /// One `T` for each field of a build.
        #[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct Fields<T> {
            $($(#[doc = $doc])* pub $field: T,)*
        }

        /// How many fields there are.
        const COUNT: usize = [$($key),*].len();

        impl<T> Fields<T> {
            /// The same value for every field: the base that a row's own fields update.
            pub const fn splat(value: T) -> Self
            where
                T: Copy,
            {
                Fields { $($field: value,)* }
            }

            /// Each field's name in the request's body, and its value.
            pub fn entries(&self) -> [(&'static str, &T); COUNT] {
                [$(($key, &self.$field)),*]
            }

            /// Each field's two values side by side.
            pub fn zip<U>(self, other: Fields<U>) -> Fields<(T, U)> {
                Fields { $($field: (self.$field, other.$field),)* }
            }

            /// Each field's value made into another, field by field in the order above; the
            /// first error stops it.
            pub fn try_map<U, E>(
                self,
                mut f: impl FnMut(T) -> Result<U, E>,
            ) -> Result<Fields<U>, E> {
                Ok(Fields { $($field: f(self.$field)?,)* })
            }
        }
    };
}

// coverage-reporter's `CI::Options`. The body sends each only when it is known, its keys
// sorted.
fields! {
    /// The CI, as the uploads name it.
    service_name: "service_name",
    /// The build number: the one field a close cannot go without.
    number: "service_number",
    job_id: "service_job_id",
    job_number: "service_job_number",
    job_url: "service_job_url",
    /// Which run of the workflow this is, where a re-run keeps the build number.
    attempt: "service_attempt",
    branch: "service_branch",
    pull_request: "service_pull_request",
    build_url: "service_build_url",
    commit: "commit_sha",
    /// `owner/name`, which a GitHub token needs beside it.
    repo_name: "repo_name",
    event_type: "service_event_type",
}

impl<T> Fields<T> {
    /// Each field's value made into another.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Fields<U> {
        let Ok(fields) = self.try_map(|value| Ok::<U, std::convert::Infallible>(f(value)));
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_has_its_own_name_in_the_body() {
        let names = Fields::splat(()).entries().map(|(name, _)| name);
        for (i, name) in names.iter().enumerate() {
            assert!(!names[..i].contains(name), "{name} twice");
        }
        assert_eq!(names.len(), COUNT);
    }

    #[test]
    fn zip_and_map_keep_each_value_in_its_field() {
        let numbers = Fields {
            number: 2,
            commit: 3,
            ..Fields::splat(0)
        };
        let doubled = numbers.zip(numbers).map(|(a, b)| a + b);
        assert_eq!((doubled.number, doubled.commit, doubled.branch), (4, 6, 0));
        let failed = numbers.try_map(|n| if n == 3 { Err(n) } else { Ok(n) });
        assert_eq!(failed, Err(3));
    }
}
