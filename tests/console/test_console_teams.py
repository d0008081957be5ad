"""Teams in the console (issue 29), as users see them in a real browser against the real platform:
who is signed in, the project picker, actions offered by role (a viewer gets no cancel and no
submit, a member cancels their own jobs only), another project's jobs never shown (list, URL,
stream), who created and who cancelled a job, a project's members page, and personal tokens
(the secret shown once, never again; revoked in the page)."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.fixtures.teams import Member, as_user, make_project, make_user, set_role, suffix

pytestmark = pytest.mark.timeout(120)


def submit_as(p, member: Member, project: str) -> str:
    """A manual job (it waits for its callbacks) submitted by `member` to `project`."""
    r = as_user(p, member, "POST", "/v1/jobs", json={"framework": "manual", "task_type": "object_detection",
                                                       "model_name": "any", "dataset_id": "ds-test", "epochs": 3,
                                                       "project_id": project})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def sign_in_as(console, member: Member) -> None:
    console.sign_in(member.token)
    expect(console.page.locator("#whoami-user")).to_have_text(member.user_id)
    console.page.wait_for_selector("#page-jobs")


@pytest.fixture
def cancel_later(platform):
    """Jobs to cancel when the test ends, however it ends (manual jobs run until told)."""
    jobs: list[str] = []
    yield jobs
    for job_id in jobs:
        platform.api("POST", f"/v1/jobs/{job_id}/cancel")


# ------------------------------------------------------------------ a: viewers and members
def test_a_viewer_is_offered_no_cancel_and_no_submit_and_a_member_cancels_only_their_own(console, platform, cancel_later):
    p, page = platform, console.page
    project = make_project(p)
    viewer = make_user(p, roles={project: "viewer"})
    member = make_user(p, roles={project: "member"})
    theirs = p.create_job(project_id=project)["id"]  # the bootstrap admin's
    own = submit_as(p, member, project)
    cancel_later += [theirs, own]

    sign_in_as(console, viewer)
    expect(page.locator("#platform-admin")).to_have_count(0)
    expect(page.locator(f'#jobs-body tr[data-id="{theirs}"]')).to_be_visible()
    expect(page.locator('#nav a[data-nav="submit"]')).to_be_hidden()  # a member nowhere: no submit at all
    expect(page.locator("#new-job")).to_have_count(0)
    assert page.locator("#project-picker option").evaluate_all("os => os.map(o => [o.value, o.textContent])") == [
        ["", "all my projects"], [project, f"{project} (viewer)"]]
    for job_id in (theirs, own):
        console.go(f"#/jobs/{job_id}")
        expect(page.locator("#created-by")).to_be_visible()  # the header is drawn, with whatever it offers
        assert page.locator("#cancel").count() == 0 and page.locator("#run-again").count() == 0
    console.go("#/submit")
    expect(page.locator("#submit-none")).to_contain_text("no project")
    assert page.locator("#submit-form").count() == 0
    console.go("#/datasets")
    expect(page.locator("#page-datasets h1")).to_have_text("Datasets")
    assert page.locator("#upload-form").count() == 0
    # the project's members, read-only
    page.select_option("#project-picker", project)
    expect(page.locator("#members-link")).to_have_text("Members")
    page.click("#members-link")
    expect(page.locator(f'#members-body tr[data-user="{viewer.user_id}"]')).to_contain_text("viewer")
    assert page.locator("#add-member, #members-body select, #members-body button").count() == 0
    page.click("#signout")

    sign_in_as(console, member)
    expect(page.locator('#nav a[data-nav="submit"]')).to_be_visible()
    console.go(f"#/jobs/{theirs}")
    expect(page.locator("#created-by")).to_have_text("created by admin")
    assert page.locator("#cancel").count() == 0  # another's job: an admin's to cancel
    expect(page.locator("#run-again")).to_be_visible()
    console.go(f"#/jobs/{own}")
    expect(page.locator("#created-by")).to_have_text(f"created by {member.user_id}")
    expect(page.locator("#cancel")).to_be_enabled()
    console.go("#/submit")  # the form's project: where their role lets them submit, the picker's first
    expect(page.locator("select#f-project_id")).to_have_value(project)
    assert page.locator("#f-project_id option").evaluate_all("os => os.map(o => o.value)") == [project]


# ------------------------------------------------------------------ b: another project's jobs
def test_a_member_never_sees_another_projects_jobs_in_the_list_by_url_or_by_stream(console, platform, cancel_later):
    p, page = platform, console.page
    mine, other = make_project(p), make_project(p)
    member = make_user(p, roles={mine: "member"})
    hidden = p.create_job(project_id=other)["id"]
    own = submit_as(p, member, mine)
    cancel_later += [hidden, own]
    console.expected_statuses = {404}

    sign_in_as(console, member)
    expect(page.locator(f'#jobs-body tr[data-id="{own}"]')).to_be_visible()  # loaded after the stream's `ready`
    assert page.locator(f'#jobs-body tr[data-id="{hidden}"]').count() == 0
    assert page.locator("#project-picker option").evaluate_all("os => os.map(o => o.value)") == ["", mine]

    # live: a job made, and one changed, in the other project never arrive; one of theirs does
    fresh_hidden = p.create_job(project_id=other)["id"]
    cancel_later.append(fresh_hidden)
    p.api("POST", f"/v1/jobs/{hidden}/cancel")
    p.wait_state(hidden, "CANCELLED", timeout=30)
    fresh_own = submit_as(p, member, mine)
    cancel_later.append(fresh_own)
    p.wait_state(fresh_own, "QUEUED")
    assert p.callback(fresh_own, "event", {"event_type": "started"}).status_code == 200
    # the stream sends changes in order: once this one is shown, the other project's are behind it
    expect(page.locator(f'#jobs-body tr[data-id="{fresh_own}"] .state')).to_have_text("RUNNING")
    for job_id in (hidden, fresh_hidden):
        assert page.locator(f'tr[data-id="{job_id}"]').count() == 0
    assert hidden not in page.content() and fresh_hidden not in page.content()

    # by URL: the job's page is the not-found of a job that does not exist
    with page.expect_response(lambda r: r.url.endswith(f"/v1/jobs/{hidden}")) as answer:
        console.go(f"#/jobs/{hidden}")
    assert answer.value.status == 404
    expect(page.locator("#job-missing")).to_have_text(f"No job {hidden}.")
    # and the list filtered by that project's name holds nothing
    console.go(f"#/jobs?project_id={other}")
    expect(page.locator("#jobs-status")).to_have_text("No jobs match.")


# ------------------------------------------------------------------ c: personal tokens
def test_a_token_made_in_the_console_works_is_shown_once_and_is_revoked_in_the_page(console, platform):
    p, page = platform, console.page
    user = make_user(p)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=p.base_url)
    sign_in_as(console, user)
    page.click("#tokens-link")
    expect(page.locator('#tokens-body tr[data-name="initial"]')).to_contain_text("(signed in with it)")
    page.fill("#token-name", "laptop")
    page.fill("#token-expires", "90d")
    page.click('#token-form button[type="submit"]')
    box = page.locator("#new-token")
    expect(box).to_contain_text("It will not be shown again")
    secret = page.locator("#new-token-secret").inner_text()
    assert secret.startswith("vtp_")
    page.click("#copy-token")
    expect(page.locator("#toast")).to_have_text("Copied to the clipboard")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    who = as_user(p, secret, "GET", "/v1/whoami")  # it works, as this user
    assert who.status_code == 200 and (who.json()["user_id"], who.json()["token_name"]) == (user.user_id, "laptop")
    row = page.locator('#tokens-body tr[data-name="laptop"]')
    expect(row.locator(".c-status")).to_have_text("active")
    assert row.locator(".c-expires").inner_text() != "never"
    # kept nowhere but the page: not in the URL, not in the tab's storage
    assert secret not in page.url
    assert secret not in page.evaluate("JSON.stringify([Object.entries(sessionStorage), Object.entries(localStorage)])")
    console.shot("tokens")

    # never shown again: not after leaving the page and coming back, not after a reload
    console.go("#/jobs")
    page.wait_for_selector("#page-jobs")
    console.go("#/tokens")
    expect(row).to_be_visible()
    assert page.locator("#new-token").count() == 0 and secret not in page.content()
    page.reload()
    expect(row).to_be_visible()
    assert secret not in page.content()

    # revoked in the page, the second click confirming (no browser dialog)
    row.locator("button.revoke").click()
    expect(row.locator("button.revoke")).to_have_text("Confirm revoke")
    assert as_user(p, secret, "GET", "/v1/whoami").status_code == 200  # one click revokes nothing
    row.locator("button.revoke").click()
    expect(row.locator(".c-status")).to_have_text("revoked")
    assert as_user(p, secret, "GET", "/v1/whoami").status_code == 401
    expect(page.locator('#tokens-body tr[data-name="initial"] .c-status')).to_have_text("active")


# ------------------------------------------------------------------ d: who did it; members
def test_the_job_page_names_who_created_and_cancelled_it_and_a_project_admin_manages_members(console, platform, cancel_later):
    p, page = platform, console.page
    project = make_project(p)
    admin = make_user(p, roles={project: "admin"})
    member = make_user(p, roles={project: "member"})
    newcomer = make_user(p)
    job_id = submit_as(p, member, project)
    cancel_later.append(job_id)
    console.expected_statuses = {422}

    sign_in_as(console, admin)
    console.go(f"#/jobs/{job_id}")
    expect(page.locator("#created-by")).to_have_text(f"created by {member.user_id}")
    expect(page.locator("#cancelled-by")).to_have_count(0)
    page.click("#cancel")  # a project admin cancels anyone's job in it
    page.click("#cancel")
    expect(page.locator("#cancelled-by")).to_have_text(f"cancelled by {admin.user_id}")
    assert p.job(job_id)["cancelled_by"] == admin.user_id

    # the members page, from the header's picker
    page.select_option("#project-picker", project)
    page.wait_for_url(re.compile(rf"#/jobs\?project_id={project}$"))
    expect(page.locator("#members-link")).to_have_text("Manage members")
    page.click("#members-link")
    members = page.locator("#members-body tr")
    expect(members).to_have_count(2)
    page.fill("#add-member-user", "nobody-here")
    page.click('#add-member button[type="submit"]')
    expect(page.locator("#add-member-error")).to_contain_text("user nobody-here not found")
    page.fill("#add-member-user", newcomer.user_id)
    page.select_option("#add-member-role", "viewer")
    page.click('#add-member button[type="submit"]')
    added = page.locator(f'#members-body tr[data-user="{newcomer.user_id}"]')
    expect(added.locator("select")).to_have_value("viewer")
    expect(added.locator(".c-added-by")).to_have_text(admin.user_id)

    def roles() -> dict[str, str]:
        return {m["user_id"]: m["role"] for m in p.api("GET", f"/v1/projects/{project}").json()["members"]}

    assert roles() == {admin.user_id: "admin", member.user_id: "member", newcomer.user_id: "viewer"}
    console.shot("members")
    added.locator("select").select_option("member")
    expect(page.locator("#toast")).to_have_text(f"{newcomer.user_id} is now a member of {project}")
    assert roles()[newcomer.user_id] == "member"
    added.locator("button.remove").click()
    expect(added.locator("button.remove")).to_have_text("Confirm remove")
    added.locator("button.remove").click()
    expect(added).to_have_count(0)
    assert newcomer.user_id not in roles()


# ------------------------------------------------------------------ the platform admin
def test_the_header_names_a_platform_admin_who_may_submit_to_any_project(signed_in):
    console, page = signed_in, signed_in.page
    shown = console.platform.api("GET", "/v1/whoami").json()["display_name"] or "admin"
    expect(page.locator("#whoami-user")).to_have_text(shown)
    expect(page.locator("#whoami-user")).to_have_attribute("title", "admin, signed in with the token bootstrap")
    console.shot("header-platform-admin")
    expect(page.locator("#platform-admin")).to_have_text("platform admin")
    console.go("#/submit")
    expect(page.locator("input#f-project_id")).to_have_value("default")  # any name: a text box
    console.go("#/tokens")  # the bootstrap admin has no personal tokens
    expect(page.locator("#tokens-bootstrap")).to_contain_text("bootstrap tokens")
    assert page.locator("#token-form").count() == 0
    assert json.loads(page.evaluate("JSON.stringify(Object.keys(localStorage))")) == []


# ------------------------------------------------------------------ escaping
XSS = '<img src=x onerror="window.__xss = 1">'


def test_a_display_name_and_a_project_description_render_as_text(console, platform):
    p, page = platform, console.page
    project = f"proj-{suffix()}"
    assert p.api("POST", "/v1/projects", json={"id": project, "description": f"about {XSS}"}).status_code == 201
    r = p.api("POST", "/v1/admin/users", json={"id": f"user-{suffix()}", "display_name": f"Eve {XSS}"})
    assert r.status_code == 201, r.text
    eve = Member(r.json()["user"]["id"], r.json()["token"]["token"], r.json()["token"]["id"])
    set_role(p, project, eve.user_id, "viewer")
    console.sign_in(eve.token)
    expect(page.locator("#whoami-user")).to_have_text(f"Eve {XSS}")
    console.go("#/projects")
    expect(page.locator(f'#projects-body tr[data-id="{project}"]')).to_contain_text(f"about {XSS}")
    console.go(f"#/projects/{project}")
    expect(page.locator("#page-projects")).to_contain_text(f"about {XSS}")
    assert page.evaluate("window.__xss") is None and page.locator("img[src='x']").count() == 0
