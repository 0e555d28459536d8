"""Page tokens are opaque cursors: later pages neither shift nor repeat when records arrive."""
import pytest

from tunesmith.api.trainer.v1 import trainer_pb2
from tunesmith.core.errors import InvalidArgument
from tunesmith.core.records import MAX_PAGE_SIZE, paginate


def job(seconds: int, job_id: str) -> trainer_pb2.TrainingJob:
    rec = trainer_pb2.TrainingJob()
    rec.job.id = job_id
    rec.job.created_at.seconds = seconds
    return rec


def ids(page):
    return [r.job.id for r in page]


def test_pages_walk_newest_first_and_end_with_an_empty_token():
    items = [job(t, f"j{t}") for t in range(10)]
    seen, token = [], ""
    while True:
        page, token = paginate(items, 3, token)
        seen += ids(page)
        if not token:
            break
    assert seen == [f"j{t}" for t in range(9, -1, -1)]


def test_new_records_between_pages_do_not_shift_or_repeat_later_pages():
    items = [job(t, f"j{t}") for t in range(10)]
    first, token = paginate(items, 4, "")
    assert ids(first) == ["j9", "j8", "j7", "j6"]
    items += [job(100 + t, f"new{t}") for t in range(5)]  # created while the client pages
    second, token = paginate(items, 4, token)
    assert ids(second) == ["j5", "j4", "j3", "j2"]
    third, token = paginate(items, 4, token)
    assert ids(third) == ["j1", "j0"] and token == ""


def test_ties_on_time_are_broken_by_id_so_no_record_is_skipped():
    items = [job(5, f"j{c}") for c in "abcdef"]
    page, token = paginate(items, 2, "")
    rest, _ = paginate(items, 10, token)
    assert sorted(ids(page) + ids(rest)) == [f"j{c}" for c in "abcdef"]
    assert not set(ids(page)) & set(ids(rest))


@pytest.mark.parametrize("size,token,field", [(-1, "", "page.page_size"), (MAX_PAGE_SIZE + 1, "", "page.page_size"),
                                              (5, "3", "page.page_token"), (5, "%%%", "page.page_token")])
def test_bad_page_size_or_token_names_the_field(size, token, field):
    with pytest.raises(InvalidArgument) as err:
        paginate([job(1, "a"), job(2, "b")], size, token)
    assert err.value.field == field
