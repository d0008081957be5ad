// A scrolled box that follows its newest line as `tail -f` does (the job's events and its log):
// what is appended keeps the box at its end, unless the user scrolled up to read, where it then
// stays until they scroll back down to the end; and a resize that wraps the lines again (a phone
// turned, a window narrowed) keeps the end in view, since the browser keeps only the scroll offset.

const SLACK = 4;  // px: "at the end" despite rounding of fractional scroll offsets

export function tail(box, { max } = {}) {
  let following = true;
  const atEnd = () => box.scrollTop + box.clientHeight >= box.scrollHeight - SLACK;
  const toEnd = () => { box.scrollTop = box.scrollHeight; };
  // every scroll, the user's or ours, says whether the box is at its end; ours always leave it there
  box.addEventListener("scroll", () => { following = atEnd(); });
  new ResizeObserver(() => { if (following) toEnd(); }).observe(box);
  return {
    append(node) {
      box.append(node);
      if (max) while (box.childElementCount > max) box.firstElementChild.remove();
      if (following) toEnd();
    },
    // back to the end and following it (after what is shown changed: a filter)
    end() {
      following = true;
      toEnd();
    },
  };
}
